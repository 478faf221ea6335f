"""A three-node NATS JetStream cluster on this machine, from the configs docker compose uses.

    cluster = LocalCluster().start()           # deploy/nats/node-{1,2,3}.conf on 127.0.0.1
    client = cluster.connect("ops")            # one URL list: fails over between the nodes
    leader = cluster.stream_leader("AGENT_TASKS")
    cluster.stop_node(leader)                  # a new leader is elected; clients move over
    cluster.start_node(leader)                 # the node comes back and catches up
    cluster.stop()

``agentlab.start(cluster=3)`` does the above and declares the reference streams with three
replicas (``agentlab.org.declare_replicated_streams``). Each node runs its config file from
``deploy/nats/`` unchanged, the very file that ``docker-compose.yml`` mounts; what must
differ on one machine (127.0.0.1, free ports instead of 4222/8222/6222, the routes to them,
a store directory per node) is given on the nats-server command line, which overrides the
file. Each node is an
:class:`~agentlab.core.server.EmbeddedServer`, so it never outlives this process.

The modules: ``config`` (the node files), ``node`` (one node), ``local`` (the cluster and
its leaders), ``publisher`` (publishing
through a failover, and the check that nothing acknowledged was lost).
"""

from .config import CONFIG_DIR_ENV, NodeConfig, config_dir, node_config_paths, parse_conf
from .local import ROUTES_SETTLE, ClusterTimeout, LocalCluster
from .node import ClusterNode
from .publisher import LEADER_ELECTED, AckedPublisher, ResendNow, missing_acked

__all__ = ["CONFIG_DIR_ENV", "LEADER_ELECTED", "ROUTES_SETTLE", "AckedPublisher", "ClusterNode",
           "ClusterTimeout", "LocalCluster", "NodeConfig", "ResendNow", "config_dir",
           "missing_acked", "node_config_paths", "parse_conf"]

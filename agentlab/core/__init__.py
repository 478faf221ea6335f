"""The NATS core: everything agentlab does on the wire, and nothing about agents.

    bridge        the private event loop thread: every sync call and its awaitable twin
    lifecycle     Service: start/stop, with and async with, written once for every component
    server        the embedded nats-server process: config, ports, readiness, no orphans
    credentials   its login: generated, kept in this process and a 0600 file (a nats
                  CLI context) for the processes given AGENTLAB_NATS_CREDENTIALS
    tls           TLS: a CA per lab, its certificates (cryptography), the client's SSLContext
    connecting    how a connection is made: nats-py's options, callbacks, errors at connect
    client        a connection: publish, subscribe, request, gather, flush, drain, connect
    subscription  handlers and iterable mailboxes;  received: one message, json(), ack()...
    jetstream     streams, consumers, publish with a receipt;  specs: their specs
    streamdata    what is stored: reads, get/delete a message, ordered feeds, pull consumers
    pull          continuous pull: requests kept outstanding on a durable consumer
    stores        key-value buckets and object stores
    subjects      subject validation, wildcard matching, the seed's subject hierarchy
    permissions   permission violations raised at the call that caused them
    notebook      allow_asyncio_run(), for a blog's asyncio.run(main()) in a cell
    _natspy       the one package that touches nats-py's internals (the fast path), with
                  a canary of each internal and a fallback to nats-py's public API

Its public names are re-exported by the front door, ``agentlab``.
"""

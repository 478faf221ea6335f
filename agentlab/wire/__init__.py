"""The wire format: plain JSON described by pydantic models, and their JSON Schemas.

    from agentlab.wire import AgentMessage
    data = AgentMessage(sender="ceo", type="task.assigned", payload={"title": "ship"}).to_bytes()

No NATS here: any client in any language produces and reads these bytes. Models of the layers
above register themselves (``register_wire_model``); ``agentlab schemas`` writes them all.
"""

from .messages import (
    SCHEMA_DIR,
    AgentMessage,
    UtcDatetime,
    WireModel,
    as_utc,
    decode_json,
    decode_model,
    export_schemas,
    json_schemas,
    new_id,
    register_wire_model,
    to_bytes,
    utc_now,
)

__all__ = ["SCHEMA_DIR", "AgentMessage", "UtcDatetime", "WireModel", "as_utc", "decode_json",
           "decode_model", "export_schemas", "json_schemas", "new_id", "register_wire_model",
           "to_bytes", "utc_now"]

# Solution to the exercise of 14-your-browser-as-an-agent.ipynb: work the CTO's queue from
# Python, over WebSocket, as the page does. It runs inside that notebook, with the notebook's
# `js` (a WebSocket connection with the page's kind of login) and `queue` (bound to the CTO's
# durable consumer); the notebook then awaits it and runs its check:
#     %run -i solutions/14-your-browser-as-an-agent.py
#     await work_the_cto_queue(answer)
#     await lesson14.check(org, task, answer, instance="learner")
# ruff: noqa: F821 (the names come from the notebook)
answer = {"decision": "the official NATS JavaScript client, over WebSocket",
          "reason": "the page speaks the protocol itself: no gateway to run"}


async def work_the_cto_queue(answer):
    try:
        messages = await queue.fetch(10, timeout=5)
    except nats.errors.TimeoutError:
        messages = []   # nothing waits: the queue was worked already
    for msg in messages:
        task = json.loads(msg.data)
        record = {"task_id": task["id"], "org": task["org"], "role": "cto",
                  "instance": "learner", "title": task["title"], "result": answer,
                  "deliveries": msg.metadata.num_delivered}
        # The record first: the server announces it on tasks.completed, once ...
        await js.publish(f"$KV.TASK_LEDGER.{task['org']}.{task['id']}",
                         json.dumps(record).encode(),
                         headers={"Nats-Msg-Id": f"{task['org']}.{task['id']}.completed"})
        await msg.ack()   # ... then the ack: the task leaves the queue
        print(f"completed {task['title']!r} (delivery {record['deliveries']})")

# Solution to the exercise of 07-tenant-isolation.ipynb. It runs inside that notebook, with
# the notebook's `users`, `users_server`, `globex`, `acme`, `connect` and `call_shared_tool`:
#     %run -i solutions/07-tenant-isolation.py
#     lesson07.check(users_globex, eavesdropper, acme)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)
from agentlab import PermissionDenied

# 1. Users model: Acme's replies come back on _INBOX.acme.>, which only Acme may read.
users_globex = connect(users, users_server, "globex", "globex-eavesdropper")
try:
    users_globex.subscribe("_INBOX.acme.>")
except PermissionDenied as error:
    print(f"users model, Globex on _INBOX.acme.>:\n  {error}\n")

# 2. Accounts model: Globex may listen to every inbox of its own account (its own agents'
#    and observer's replies come by there), and hears nothing of Acme's, which live in
#    Acme's account.
eavesdropper = globex.subscribe("_INBOX.>")
answer = call_shared_tool(acme, "search", query="acme's reply")
heard = eavesdropper.messages(timeout=0.5)
overheard = [m for m in heard if b"acme's reply" in m.data]
print(f"accounts model: Acme got {answer}")
print(f"                Globex's _INBOX.> received {len(heard)} messages (its own agents' "
      f"replies), {len(overheard)} of them Acme's")

"""``tessera admin token create|list|revoke``: bearer tokens (docs/auth.md).

``create`` prints the new token once (placement keeps only its sha256; there is no way to see
it again), ``list`` shows ids, roles, names and states (never a secret), ``revoke ID`` makes a
token stop working: on routers at once, on nodes within a heartbeat round trip (placement
pushes the change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tesserapb import meta_pb2

if TYPE_CHECKING:
    from tools.admin import Admin

EXIT_OK = 0


def token_json(t: meta_pb2.TokenInfo) -> dict[str, Any]:
    return {
        "id": t.id,
        "role": t.role,
        "name": t.name or None,
        "created_ms": t.created_ms,
        "revoked": t.revoked,
        "revoked_ms": t.revoked_ms or None,
    }


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + " UTC" if ms else "-"


def _behind(stores: Sequence[int], what: str) -> str:
    if not stores:
        return f"; every node that is up will {what} from now on" if what == "accept it" else \
            "; no node that is up accepts it any more"
    return (f"; stores {', '.join(map(str, stores))} have not confirmed the new token table yet "
            f"(they {what} once their link to placement brings it)")


async def cmd_token(admin: Admin, args: argparse.Namespace) -> int:
    from tools.admin import Refused, table

    action = args.token_action
    if action == "create":
        if not args.role:
            raise Refused("token create needs --role read|write|admin")
        if args.token_id is not None:
            raise Refused("token create takes no ID")
        resp = await admin.call("CreateToken", meta_pb2.CreateTokenRequest(role=args.role, name=args.name or ""))
        if admin.as_json:
            print(json.dumps({**token_json(resp.info), "token": resp.token, "stores_behind": list(resp.stores_behind)},
                             indent=1))
        else:
            print(resp.token)
            print(f"token {resp.info.id}, role {resp.info.role}: shown once, keep it (placement stores only its hash)"
                  f"{_behind(resp.stores_behind, 'accept it')}", file=sys.stderr)
        return EXIT_OK
    if action == "revoke":
        if args.token_id is None:
            raise Refused("token revoke needs the token's ID (tessera admin token list)")
        resp = await admin.call("RevokeToken", meta_pb2.RevokeTokenRequest(id=args.token_id))
        if admin.as_json:
            print(json.dumps({**token_json(resp.info), "stores_behind": list(resp.stores_behind)}, indent=1))
        else:
            print(f"token {resp.info.id} revoked{_behind(resp.stores_behind, 'refuse it')}")
        return EXIT_OK
    resp = await admin.call("ListTokens", meta_pb2.ListTokensRequest())
    shown = [token_json(t) for t in resp.tokens]
    if admin.as_json:
        print(json.dumps(shown, indent=1))
    elif not shown:
        print("no tokens")
    else:
        rows = [(t["id"], t["role"], t["name"] or "-", _when(t["created_ms"]),
                 f"revoked {_when(t['revoked_ms'] or 0)}" if t["revoked"] else "active") for t in shown]
        print(table(("ID", "ROLE", "NAME", "CREATED", "STATE"), rows))
    return EXIT_OK

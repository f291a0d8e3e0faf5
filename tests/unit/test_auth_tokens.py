"""Tokens and roles (docs/auth.md) without a cluster: the policy covers every RPC, the token
format and hashing, the placement commands that keep tokens (replicated and checkpointed), the
node's copy of the table, and what the client and CLI make of a refusal."""

from __future__ import annotations

import grpc
import pytest

from common import auth
from common.auth import Grant, Need, Role
from node.node_auth import NodeTokens
from router.client.channels import ChannelPool
from router.client.errors import AccessDeniedError, RpcFailure
from router.client.retry import classify
from router.placement import checkpoint, codec
from router.placement.commands import CreateToken, PlacementError, RevokeToken
from router.placement.table import PlacementTable
from tesserapb import kv_pb2, meta_pb2, raft_pb2


def test_the_policy_names_every_method_of_every_service() -> None:
    methods = [
        f"/{service.full_name}/{m.name}"
        for module in (kv_pb2, meta_pb2, raft_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    ]
    assert len(methods) >= 7 + 13 + 3
    missing = [m for m in methods if m not in auth.POLICY]
    assert not missing, f"no policy for {missing} (they would need a member's certificate)"
    assert auth.need_of("/tessera.v1.Future/Thing") is Need.MEMBER  # fail closed
    assert auth.need_of("/grpc.health.v1.Health/Check") is Need.OPEN
    assert auth.need_of("/tessera.v1.KV/Put") is Need.WRITE
    assert auth.need_of("/tessera.v1.Meta/CreateToken") is Need.ADMIN
    assert auth.need_of("/tessera.v1.Meta/StoreHeartbeat") is Need.MEMBER


def test_tokens_are_random_well_formed_and_stored_as_sha256() -> None:
    a, b = auth.new_token(), auth.new_token()
    assert a != b and auth.well_formed(a) and a.startswith("tsk_") and len(a) == 4 + 43
    digest = auth.token_hash(a)
    assert auth.valid_hash(digest) and digest != auth.token_hash(b)
    for bad in ("", "tsk_", "tsk_short", "Bearer " + a, a + " ", "xyz_" + a[4:], "tsk_" + "é" * 40):
        assert not auth.well_formed(bad), bad
    assert not auth.valid_hash("ABC") and not auth.valid_hash(digest.upper())


def test_bearer_metadata_is_read_and_written() -> None:
    tok = auth.new_token()
    assert auth.bearer_from(()) is None
    assert auth.bearer_from((("x-other", "1"),)) is None
    assert auth.bearer_from(auth.call_metadata(tok)) == tok
    assert auth.bearer_from((("authorization", b"Bearer " + tok.encode()),)) == tok
    assert auth.bearer_from((("authorization", "Basic dXNlcjpw"),)) == ""  # there, but not a bearer token
    assert auth.call_metadata(None) == ()
    assert Role.parse("Write") is Role.WRITE and Role.READ < Role.WRITE < Role.ADMIN
    with pytest.raises(ValueError, match="one of read, write, admin"):
        Role.parse("root")


def _table_with(*roles: str) -> tuple[PlacementTable, list[str]]:
    t = PlacementTable()
    tokens = []
    for role in roles:
        tok = auth.new_token()
        tokens.append(tok)
        t.apply(CreateToken(auth.token_hash(tok), role, 1000, name=f"{role} one"))
    return t, tokens


def test_token_commands_create_revoke_and_refuse_without_changing_anything() -> None:
    t, (r, w) = _table_with("read", "write")
    book = t.tokens
    assert book.lookup(auth.token_hash(r)) == Grant(1, Role.READ)
    assert book.lookup(auth.token_hash(w)) == Grant(2, Role.WRITE)
    assert book.version == 3  # 1 + two changes
    before = codec.table_to_json(t)
    refused: list[CreateToken | RevokeToken] = [
        CreateToken("nothex", "read"),
        CreateToken(auth.token_hash(auth.new_token()), "root"),
        CreateToken(auth.token_hash(r), "admin"),  # a hash is never reused
        RevokeToken(99),
    ]
    for cmd in refused:
        with pytest.raises(PlacementError):
            t.apply(cmd)
        assert codec.table_to_json(t) == before, cmd
    applied = t.apply(RevokeToken(1, now_ms=2000))
    assert applied.token_id == 1 and applied.durable
    assert book.lookup(auth.token_hash(r)) is None and book.tokens[1].revoked and book.tokens[1].revoked_ms == 2000
    assert book.version == 4
    again = t.apply(RevokeToken(1, now_ms=3000))  # idempotent
    assert not again.durable and book.version == 4 and book.tokens[1].revoked_ms == 2000
    assert set(book.table.grants) == {auth.token_hash(w)}


def test_the_bootstrap_admin_token_is_added_once_per_cluster() -> None:
    t = PlacementTable()
    first = auth.token_hash(auth.new_token())
    t.apply(CreateToken(first, "admin", 5, "bootstrap", bootstrap=True))
    t.apply(RevokeToken(1))
    with pytest.raises(PlacementError, match="bootstrap"):
        t.apply(CreateToken(auth.token_hash(auth.new_token()), "admin", 6, "bootstrap", bootstrap=True))
    assert t.tokens.bootstrapped and len(t.tokens.tokens) == 1


def test_tokens_survive_the_codec_and_checkpoints_and_an_empty_book_writes_nothing() -> None:
    plain = PlacementTable()
    assert "tokens" not in codec.table_to_doc(plain)  # a table without tokens encodes as before
    t, (a,) = _table_with("admin")
    t.apply(CreateToken(auth.token_hash(auth.new_token()), "read", 7))
    t.apply(RevokeToken(2, 8))
    back = codec.table_from_json(codec.table_to_json(t))
    assert back.tokens.lookup(auth.token_hash(a)) == Grant(1, Role.ADMIN)
    assert back.tokens.version == t.tokens.version and back.tokens.next_id == 3
    assert back.tokens.tokens[2].revoked
    cp = checkpoint.decode(checkpoint.encode(checkpoint.Checkpoint(9, 2, frozenset({1}), t)))
    assert codec.table_to_json(cp.table) == codec.table_to_json(t)
    for cmd in (CreateToken(auth.token_hash(a), "write", 3, "n", True), RevokeToken(4, 5)):
        assert codec.decode_command(codec.encode_command(cmd)) == cmd
    assert "tsk_" not in codec.table_to_json(t).decode()  # never a secret


def test_a_node_takes_the_table_only_when_it_changed() -> None:
    tokens = NodeTokens()
    calls = []
    tokens.on_change = lambda: calls.append(1)
    assert tokens.version == 0 and tokens.lookup("x") is None
    assert not tokens.update(meta_pb2.StoreHeartbeatResponse(tokens_version=0))
    changed = meta_pb2.StoreHeartbeatResponse(tokens_version=5, tokens_changed=True, tokens=[
        meta_pb2.TokenGrant(hash="a" * 64, id=3, role="write"),
        meta_pb2.TokenGrant(hash="b" * 64, id=4, role="superuser"),  # unknown role: ignored
    ])
    assert tokens.update(changed) and calls == [1]
    assert tokens.version == 5 and tokens.lookup("a" * 64) == Grant(3, Role.WRITE) and tokens.lookup("b" * 64) is None
    assert tokens.update(meta_pb2.StoreHeartbeatResponse(tokens_version=6, tokens_changed=True))
    assert tokens.lookup("a" * 64) is None  # revoked: the new table has it no more


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED])
@pytest.mark.parametrize("source", ["node", "router", "stream"])
def test_refusals_are_final_for_the_client(code: grpc.StatusCode, source: str) -> None:
    decision = classify(RpcFailure(code, "no", source=source))
    assert isinstance(decision.final, AccessDeniedError) and decision.final.code == code


def test_a_token_needs_tls() -> None:
    with pytest.raises(ValueError, match="a token needs TLS"):
        ChannelPool(None, auth.new_token())


def test_refusal_text_says_what_to_do() -> None:
    assert "give --token" in auth.refusal_text("UNAUTHENTICATED", "no token", had_token=False)
    assert "give --token" not in auth.refusal_text("UNAUTHENTICATED", "unknown or revoked token", had_token=True)
    assert auth.refusal_text("PERMISSION_DENIED", "needs role admin", True).startswith("permission denied")


def test_the_cli_takes_token_flags_everywhere_it_talks_to_a_cluster() -> None:
    from tools.cli import build_parser

    p = build_parser()
    assert p.parse_args(["kv", "get", "k", "--token", "T"]).token == "T"
    assert p.parse_args(["kv", "--token", "T", "put", "k", "v"]).token == "T"
    assert p.parse_args(["admin", "stores", "--token", "T"]).token == "T"
    got = p.parse_args(["admin", "token", "create", "--role", "read", "--name", "ci"])
    assert (got.token_action, got.role, got.name, got.token_id) == ("create", "read", "ci", None)
    assert p.parse_args(["admin", "token", "revoke", "3"]).token_id == 3
    assert p.parse_args(["bench", "--workload", "write", "--local", "--auth"]).auth
    assert p.parse_args(["cluster", "up", "--auth"]).auth
    assert p.parse_args(["node", "--auth", "--store-id", "1"]).auth
    router = p.parse_args(["router", "--auth", "--admin-token-hash", "ab" * 32])
    assert router.auth and router.admin_token_hash == "ab" * 32

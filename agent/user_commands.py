"""``oncoagent users``: the web worklist's local accounts (add, list, passwd, disable).

Passwords are read from standard input (``--password-stdin``: its first line; also whenever standard input is
not a terminal) or asked twice on the terminal, and only their argon2id hash is stored (:mod:`agent.passwords`).
No command prints or logs a password or a hash. ``users add`` creates the store of a new data directory, so
accounts can be made before the daemon first runs.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

from agent.config import LoadedSettings
from agent.errors import EXIT_CONFIG
from agent.review_records import Role, User
from agent.store_commands import _iso, _opened_store


def add_parser(sub: Any) -> None:
    users = sub.add_parser("users", help="the web worklist's local accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    add = users_sub.add_parser("add", help="add an account (creates the store of a new data directory)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    source = add.add_mutually_exclusive_group()
    _password_stdin(source)
    source.add_argument("--no-password", action="store_true",
                        help="no password: the account signs in only through the trusted proxy header")
    add.set_defaults(handler=cmd_users_add)

    listed = users_sub.add_parser("list", help="list the accounts (never their password hashes)")
    listed.add_argument("--json", action="store_true", help="machine-readable output")
    listed.set_defaults(handler=cmd_users_list)

    passwd = users_sub.add_parser("passwd", help="set an account's password (its web sessions end)")
    passwd.add_argument("name")
    _password_stdin(passwd)
    passwd.set_defaults(handler=cmd_users_passwd)

    disable = users_sub.add_parser("disable", help="disable an account: it cannot sign in, its sessions end")
    disable.add_argument("name")
    disable.set_defaults(handler=cmd_users_disable)


def cmd_users_add(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from agent.store import Store

    password_hash = None
    if not args.no_password:
        password_hash = _read_hash(args.password_stdin)
        if not password_hash:
            return EXIT_CONFIG
    store = Store.open(loaded.settings.database_url)
    try:
        user = store.add_user(args.name, Role(args.role), password_hash, time.time())
    except ValueError as exc:  # a name the store refuses
        print(f"oncoagent: {exc}; nothing changed", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        store.close()
    print(f"added user {user.name} ({user.role}" + (", proxy sign-in only)" if password_hash is None else ")"))
    return 0


def cmd_users_list(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        users = store.list_users()
    if args.json:
        print(json.dumps([as_json(u) for u in users], indent=2))
        return 0
    if not users:
        print("no users")
        return 0
    print(f"{'name':<24} {'role':<12} {'password':<9} {'created (UTC)':<20} {'disabled (UTC)':<20}")
    for u in users:
        print(f"{u.name:<24} {u.role:<12} {'yes' if u.password_hash else 'no':<9} {_iso(u.created_at):<20} "
              f"{_iso(u.disabled_at) or '':<20}")
    return 0


def cmd_users_passwd(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    password_hash = _read_hash(args.password_stdin)
    if not password_hash:
        return EXIT_CONFIG
    with _opened_store(loaded.settings) as store:
        store.set_password(args.name, password_hash)
    print(f"password of {args.name} set; its web sessions ended")
    return 0


def cmd_users_disable(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    with _opened_store(loaded.settings) as store:
        user = store.disable_user(args.name, time.time())
    print(f"disabled user {user.name} (since {_iso(user.disabled_at)}); its web sessions ended")
    return 0


def as_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role.value,
        "password": user.password_hash is not None,
        "created_at": _iso(user.created_at),
        "disabled_at": _iso(user.disabled_at),
    }


def _password_stdin(parser: Any) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input's first line (not from the terminal)")


def _read_hash(from_stdin: bool) -> str:
    """The hash of the password read from standard input or asked on the terminal; "" (said why on stderr)
    when there is none or the two typed differ."""
    from agent.passwords import hash_password  # argon2: only for the commands that hash

    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("password again: ") != password:
            print("oncoagent: the passwords differ; nothing changed", file=sys.stderr)
            return ""
    try:
        return hash_password(password)
    except ValueError as exc:
        print(f"oncoagent: {exc}; nothing changed", file=sys.stderr)
        return ""

"""st2-generate-symmetric-crypto-key: write the datastore's AES key file, readable by its owner only.

    st2-generate-symmetric-crypto-key [--config-file PATH] [-k PATH] [-f | --if-missing]

The key file is the one ``st2ctl start`` generates for the embedded setup
(``crypto.write_key_file``: keyczar's JSON format, mode 0600, created
exclusively so two writers cannot each leave a different key). Without
``-k`` it goes where ``[keyvalue] encryption_key_path`` says.

| the file already exists | exit | what happens                                                   |
| ----------------------- | ---- | -------------------------------------------------------------- |
| (no flag)               | 2    | nothing, as StackStorm's tool does                             |
| ``--if-missing``        | 0    | nothing (for start-up steps that run on every start: compose)  |
| ``-f/--force``          | 0    | the old key is kept as ``<name>.bkup-<UTC time>``, a new one   |
|                         |      | written; values encrypted with the old key no longer decrypt   |
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import TextIO

from st2common import config
from st2common.exceptions import ConfigError
from st2common.util import crypto

EXISTS = 2


def build_parser() -> argparse.ArgumentParser:
    """The command line, as StackStorm's tool takes it plus --config-file and --if-missing."""
    parser = argparse.ArgumentParser(prog="st2-generate-symmetric-crypto-key",
                                     description="Generate the datastore's symmetric crypto key file.")
    parser.add_argument("--config-file", default=None,
                        help=f"st2.conf naming the key path (default: ${config.CONFIG_PATH_ENV} or conf/st2.conf)")
    parser.add_argument("-k", "--key-path", default=None,
                        help="where to write the key (default: [keyvalue] encryption_key_path)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("-f", "--force", action="store_true",
                          help="replace an existing key file, keeping the old one as a backup")
    existing.add_argument("--if-missing", action="store_true",
                          help="succeed without writing when the key file already exists")
    return parser


def _backup(path: Path) -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    backup = path.with_name(f"{path.name}.bkup-{stamp}")
    os.replace(path, backup)
    return backup


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run the tool; the exit code (0 written or kept, 1 error, 2 exists)."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        path = Path(args.key_path) if args.key_path else config.load(args.config_file).keyvalue.encryption_key_path
    except ConfigError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    if path is None:
        print("ERROR: no key path: give -k or set [keyvalue] encryption_key_path", file=sys.stderr)
        return 1
    try:
        if path.exists():
            if args.if_missing:
                print(f"Key {path} already exists; kept.", file=out)
                return 0
            if not args.force:
                print(f"You already have a key at the specified location {path}! Not generating a new key. "
                      "Either delete the file or re-run with --force.", file=out)
                return EXISTS
            print(f"WARNING: Backed up old key file to {_backup(path).name}.", file=out)
        if not crypto.write_key_file(path):
            # Another writer created it between our check and our write: theirs is the key.
            print(f"Key {path} was written by another process meanwhile; kept.", file=out)
            return 0 if args.if_missing else EXISTS
    except OSError as exc:
        print(f"ERROR: cannot write the key file {path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"Key written to {path} (mode 0600). Only the StackStorm services and admins should read it.", file=out)
    return 0

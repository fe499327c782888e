"""Handlers for living with the records (issue 16): history, revert, trash, edit, system set,
mv, find, import, and the generator options of ``put``.

Same shape as :mod:`credvault.cli.commands`: read what argparse gave, make one library
call, render. ``credvault edit`` is the one handler with more to do: it writes the
non-secret fields to a 0600 file in a private temporary directory, runs ``$EDITOR`` on it,
reads it back and removes it; the secret is never in that file.

The command table imports this module for every command (``credvault get`` included), so
everything heavier than argparse is imported inside the handler that needs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from credvault import InvalidInput
from credvault.cli import terminal as t
from credvault.cli.commands import open_vault, render

EXIT_OK = 0


# -- history ----------------------------------------------------------------------------------
def cmd_history(args: argparse.Namespace) -> int:
    """Versions of a credential: who, when, what changed (never a value)."""
    with open_vault(args) as v:
        hist = v.credentials.history(args.ref)
    render(
        args,
        [h.to_json() for h in hist],
        ["version", "at", "by", "changed"],
        [
            [f"{h.version}{' (current)' if h.current else ''}", h.at, h.by or "-", h.changed]
            for h in hist
        ],
    )
    return EXIT_OK


def cmd_revert(args: argparse.Namespace) -> int:
    """Make an earlier version current again (itself a new version: nothing is lost)."""
    with open_vault(args) as v:
        v.credentials.revert(args.ref, args.version)
        now = v.credentials.history(args.ref)[-1].version
    t.out(f"reverted {args.ref} to version {args.version} (now version {now})")
    return EXIT_OK


# -- trash --------------------------------------------------------------------------------------
def cmd_trash_ls(args: argparse.Namespace) -> int:
    """What rm and system rm put in an engagement's trash, and until when."""
    with open_vault(args) as v:
        items = v.credentials.trash(args.name)
    render(
        args,
        [i.to_json() for i in items],
        ["type", "name", "removed", "by", "destroyed after"],
        [[i.type, i.name, i.deleted_at, i.deleted_by, i.expires_at] for i in items],
    )
    return EXIT_OK


def cmd_trash_restore(args: argparse.Namespace) -> int:
    """Bring a removed credential (or, with --system, a system) back from the trash."""
    with open_vault(args) as v:
        if args.system:
            v.systems.restore(args.ref)
        else:
            v.credentials.restore(args.ref)
    t.out(f"restored {'system ' if args.system else ''}{args.ref}")
    return EXIT_OK


def cmd_trash_purge(args: argparse.Namespace) -> int:
    """Destroy a removed item now (with its history): confirmed on a terminal, or --yes."""
    kind = "system " if args.system else ""
    t.confirm(
        f"Destroy {kind}{args.ref} from the trash now? This cannot be undone.",
        yes=args.yes,
        verb="destroy it",
    )
    with open_vault(args) as v:
        v.purger.destroy_trashed(args.ref, system=args.system)
    t.out(f"destroyed {kind}{args.ref}")
    return EXIT_OK


# -- edit without revealing ----------------------------------------------------------------------
_FIELDS = ("username", "url", "kind", "system")
_HEADER = (
    "# credvault edit {ref}: the fields that are not the secret (change that with put).\n"
    "# One 'field: value' a line; an empty value clears it. Everything after 'notes:' is\n"
    "# the notes. Lines starting with '#' are ignored. Save and quit to apply.\n"
)


def cmd_edit(args: argparse.Namespace) -> int:
    """Change username, URL, notes, kind or system link without the secret.

    With field options it applies them; without, it opens ``$VISUAL``/``$EDITOR`` on the
    fields (0600 file in a private temporary directory, removed afterwards).
    """
    from credvault.cli.fields import read_fields

    given = read_fields(args, ("username", "url", "notes"), stdin_free=True)
    changes: dict[str, str | None] = {}
    for f in (*_FIELDS, "notes"):
        value = given[f] if f in given else getattr(args, f, None)
        if value is not None:
            changes[f] = value
    for f in args.clear or ():
        if f in changes:
            raise InvalidInput(f"--{f} and --clear {f} together")
        changes[f] = None
    with open_vault(args) as v:
        if not changes:
            before = v.credentials.fields(args.ref, reason=args.reason)
            after = _edit_in_editor(args.ref, before)
            changes = {k: val for k, val in after.items() if before.get(k) != val}
            if not changes:
                t.out(f"{args.ref}: nothing changed")
                return EXIT_OK
        v.credentials.edit(args.ref, changes)
    t.out(f"edited {args.ref}: {', '.join(changes)}")
    return EXIT_OK


def _edit_in_editor(ref: str, fields: dict[str, str | None]) -> dict[str, str | None]:
    import os  # here, not at the top: this module is imported on every command's path
    import shlex
    import shutil
    import subprocess
    import tempfile

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    text = _HEADER.format(ref=ref)
    text += "".join(f"{f}: {fields.get(f) or ''}\n" for f in _FIELDS)
    text += "notes:\n" + (fields.get("notes") or "")
    tmp = tempfile.mkdtemp(prefix="credvault-edit-")  # 0700, ours alone
    try:
        path = Path(tmp) / "fields.txt"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        rc = subprocess.run([*shlex.split(editor), str(path)], check=False).returncode
        if rc != 0:
            raise InvalidInput(f"the editor exited with status {rc}: nothing changed")
        edited = path.read_text(encoding="utf-8")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if edited in (text, text + "\n"):  # saved untouched (many editors add a final newline)
        return dict(fields)
    after = parse_fields(edited)
    notes = fields.get("notes")
    if notes and not notes.endswith("\n") and after.get("notes") == notes + "\n":
        after["notes"] = notes  # the editor's final newline, not the user's
    return after


def parse_fields(text: str) -> dict[str, str | None]:
    """The edited file back into fields (see the header written into it)."""
    out: dict[str, str | None] = {}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("#") or not line.strip():
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or key not in (*_FIELDS, "notes"):
            raise InvalidInput(
                f"line {i + 1}: expected 'field: value' for one of {', '.join(_FIELDS)}, notes"
            )
        if key == "notes":  # the rest of the file as it is: whitespace is the user's
            first = [value.strip()] if value.strip() else []
            out["notes"] = "\n".join([*first, *lines[i + 1 :]]) or None
            break
        out[key] = value.strip() or None
    for f in (*_FIELDS, "notes"):
        out.setdefault(f, None)
    if out.get("kind") is None:
        raise InvalidInput("kind cannot be empty")
    return out


# -- systems --------------------------------------------------------------------------------------
def cmd_system_set(args: argparse.Namespace) -> int:
    """Change a system field by field; what is not named keeps its value."""
    from credvault.cli.fields import read_fields

    given: dict[str, object] = dict(read_fields(args, ("address", "details"), stdin_free=True))
    changes: dict[str, object] = {
        f: given[f] if f in given else getattr(args, f)
        for f in ("address", "port", "protocol", "details")
        if (given[f] if f in given else getattr(args, f)) is not None
    }
    for f in args.clear or ():
        if f in changes:
            raise InvalidInput(f"--{f} and --clear {f} together")
        changes[f] = None
    with open_vault(args) as v:
        v.systems.set(args.ref, changes)
    t.out(f"updated system {args.ref}: {', '.join(changes)}")
    return EXIT_OK


# -- rename and move -------------------------------------------------------------------------------
def cmd_mv(args: argparse.Namespace) -> int:
    """Rename a credential, or move it into another engagement (re-encrypted there)."""
    with open_vault(args) as v:
        info = v.credentials.move(args.ref, args.target)
    t.out(f"moved {args.ref} to {info.engagement}/{info.name}")
    return EXIT_OK


# -- search -----------------------------------------------------------------------------------------
def cmd_find(args: argparse.Namespace) -> int:
    """Credentials and systems whose name (or, where you may read, fields) contain TEXT."""
    with open_vault(args) as v:
        hits = v.credentials.find(args.text, fields=not args.names_only, reason=args.reason)
    if hits.skipped:  # say so: a search that covered less than asked would mislead
        n = len(hits.skipped)
        t.err(
            f"fields of {n} engagement{'s' if n > 1 else ''} not searched (names only): "
            f"{', '.join(hits.skipped)} require{'s' if n == 1 else ''} --reason"
        )
    render(
        args,
        [h.to_json() for h in hits],
        ["engagement", "type", "name", "matched"],
        [[h.engagement, h.type, h.name, h.field] for h in hits],
    )
    return EXIT_OK


# -- import -----------------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    """Import a KeePass/KeePassXC, Bitwarden, pass or CSV source into an engagement."""
    from credvault import Secret, parse_import_mapping, read_import_source

    password = None
    if args.format == "kdbx":
        if args.password_file:
            from credvault import read_passphrase_file

            password = Secret(read_passphrase_file(Path(args.password_file)))
        elif t.has_terminal():
            password = Secret(t.ask_hidden(f"Master password of {Path(args.source).name}: "))
        else:
            password = Secret(t.read_secret_stdin())
    mapping = parse_import_mapping(args.map) if args.map else None
    entries = read_import_source(
        args.format,
        Path(args.source),
        password=password,
        keyfile=Path(args.keyfile) if args.keyfile else None,
        mapping=mapping,
    )
    del password
    with open_vault(args) as v:
        plan = v.credentials.import_entries(args.name, entries, dry_run=args.dry_run)
    if args.json:
        t.out_json({"dry_run": args.dry_run, **plan.to_json()})
        return EXIT_OK
    verb = "would import" if args.dry_run else "imported"
    t.out(
        f"{verb} {len(plan.items)} credentials and {len(plan.systems)} systems into "
        f"{args.name}; {len(plan.skipped)} skipped"
    )
    p = t.printable  # sources are the import file's titles and folders: no raw escapes
    for i in plan.items:
        system = f" (system {i.system})" if i.system else ""
        t.out(f"  + {p(i.name)}{system}  <- {p(i.source)}")
    for sysp in plan.systems:
        t.out(f"  + system {p(sysp.name)}")
    for sk in plan.skipped:
        t.out(f"  - {p(sk.source)}: {p(sk.reason)}")
    return EXIT_OK

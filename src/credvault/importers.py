"""Import parsers: KeePass/KeePassXC, Bitwarden, pass, generic CSV → one import plan.

Why pure parsers apart from the vault: every source is read completely, names are
validated and deduplicated, and what cannot be imported is listed with its reason, all
before the vault is touched. The vault then stores the whole plan in one transaction
(``Credentials.import_plan``) or nothing at all, and ``--dry-run`` shows the same plan.

Where the source is encrypted credvault never implements its crypto: a KDBX file goes
through the user's own ``keepassxc-cli export``, a pass store through the user's ``gpg``
(and its agent). The master password for ``keepassxc-cli`` travels on its stdin, never in
argv or the environment.

Naming is predictable: the source title with every run of characters outside
``[A-Za-z0-9._-]`` turned into one ``-``, trimmed to 64; an empty result becomes
``entry``; repeats get ``-2``, ``-3``… in source order, and names already in the
engagement are skipped (reported), never overwritten. Hosts (an ``ssh://``-like URL, or a
field named host/hostname/address/ip) become systems, deduplicated by address, port and
protocol.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from credvault import validate
from credvault.errors import CredvaultError, InvalidInput
from credvault.secret import Secret

__all__ = [
    "FORMATS",
    "ImportItem",
    "ImportPlan",
    "ImportSystem",
    "RawEntry",
    "Skipped",
    "SourceError",
    "build_plan",
    "read_source",
]

FORMATS = ("keepass-xml", "keepass-csv", "kdbx", "bitwarden-json", "pass", "csv")
#: URL schemes that name a machine to log in to rather than a web page.
HOST_SCHEMES = {"ssh": 22, "sftp": 22, "scp": 22, "rdp": 3389, "telnet": 23, "vnc": 5900}
_HOST_KEYS = ("host", "hostname", "address", "ip", "server")
_BAD = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SOURCE = 256 * 1024 * 1024  # no export of a team vault is this large
CSV_FIELDS = ("name", "secret", "username", "url", "notes", "host", "port", "protocol", "kind")


class SourceError(CredvaultError):
    """The source could not be read at all (nothing was imported)."""

    exit_code = 2


class RawEntry(NamedTuple):
    """One source entry as read, before naming; ``secret`` is redacted in ``repr``."""

    source: str  # where it came from, for the report: "Group/Title", "line 12"
    title: str
    secret: Secret | None
    username: str | None = None
    url: str | None = None
    notes: str | None = None
    host: str | None = None
    port: int | None = None
    protocol: str | None = None
    kind: str = "password"


class Skipped(NamedTuple):
    source: str
    reason: str


class ImportSystem(NamedTuple):
    name: str
    address: str
    port: int | None
    protocol: str | None


class ImportItem(NamedTuple):
    name: str
    secret: Secret
    kind: str
    username: str | None
    url: str | None
    notes: str | None
    system: str | None
    source: str


class ImportPlan(NamedTuple):
    """What an import creates, and what it leaves out and why."""

    items: list[ImportItem]
    systems: list[ImportSystem]
    skipped: list[Skipped]

    def to_json(self) -> dict[str, object]:
        """The report (``--json``): names and sources, never a secret."""
        return {
            "credentials": [
                {
                    "name": i.name,
                    "kind": i.kind,
                    "system": i.system,
                    "source": i.source,
                    "username": i.username is not None,
                    "url": i.url is not None,
                    "notes": i.notes is not None,
                }
                for i in self.items
            ],
            "systems": [s._asdict() for s in self.systems],
            "skipped": [s._asdict() for s in self.skipped],
        }


# ---------------------------------------------------------------- planning


def clean_name(title: str) -> str:
    """A title made into a valid item name (see the module docstring)."""
    n = _BAD.sub("-", title.strip()).strip("-.")[: validate.MAX_NAME].rstrip("-.")
    return n if n and n[0].isalnum() else ("entry" + ("-" + n if n else ""))[: validate.MAX_NAME]


def _unique(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    i = 2
    while True:
        suffix = f"-{i}"
        cand = base[: validate.MAX_NAME - len(suffix)] + suffix
        if cand not in taken:
            return cand
        i += 1


def build_plan(
    entries: Iterable[RawEntry | Skipped],
    *,
    existing_credentials: Iterable[str] = (),
    existing_systems: Mapping[str, tuple[str, int | None, str | None]] | None = None,
) -> ImportPlan:
    """Name, validate and deduplicate ``entries`` against what the engagement holds.

    ``existing_systems`` maps a system name to (address, port, protocol): a host equal to an
    existing system is linked to it rather than created again.
    """
    existing = set(existing_credentials)
    ex_sys = dict(existing_systems or {})
    by_host: dict[tuple[str, int | None, str | None], str] = {v: k for k, v in ex_sys.items()}
    taken_names: set[str] = set(existing)  # existing names, then each one handed out
    taken_sys = set(ex_sys)
    items: list[ImportItem] = []
    systems: list[ImportSystem] = []
    skipped: list[Skipped] = []
    for e in entries:
        if isinstance(e, Skipped):
            skipped.append(e)
            continue
        if e.secret is None or not e.secret:
            skipped.append(Skipped(e.source, "no password or secret"))
            continue
        if len(e.secret) > validate.MAX_SECRET:
            skipped.append(Skipped(e.source, "secret larger than 1 MiB"))
            continue
        try:
            username = validate.text(e.username or None, "username", max_len=1024, multiline=False)
            url = validate.text(e.url or None, "URL", max_len=4096, multiline=False)
            notes = validate.text(e.notes or None, "notes")
            kind = validate.kind(e.kind)
        except InvalidInput as err:
            skipped.append(Skipped(e.source, str(err)))
            continue
        host = None
        if e.host:
            try:
                addr = validate.address(e.host)
                port = validate.port(e.port) if e.port is not None else None
                proto = validate.name(e.protocol.lower(), "protocol") if e.protocol else None
            except InvalidInput as err:
                skipped.append(Skipped(e.source, str(err)))
                continue
            host = (addr, port, proto)
        base = clean_name(e.title or (username or "") or (e.host or ""))
        if base in existing:
            skipped.append(Skipped(e.source, f"credential {base!r} exists already"))
            continue
        sys_name = None
        if host is not None:  # only for an entry that is imported
            sys_name = by_host.get(host)
            if sys_name is None:
                sys_name = _unique(clean_name(host[0]), taken_sys)
                taken_sys.add(sys_name)
                by_host[host] = sys_name
                systems.append(ImportSystem(sys_name, *host))
        name = _unique(base, taken_names)
        taken_names.add(name)
        items.append(ImportItem(name, e.secret, kind, username, url, notes, sys_name, e.source))
    return ImportPlan(items, systems, skipped)


def _host_of(url: str | None) -> tuple[str | None, int | None, str | None, str | None]:
    """(host, port, protocol, url left as a field): ssh-like URLs become hosts."""
    if not url or url.partition("://")[0].strip().lower() not in HOST_SCHEMES:
        return None, None, None, url  # the common case (web URLs) without urlsplit
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme in HOST_SCHEMES and parts.hostname:
            return parts.hostname, parts.port or HOST_SCHEMES[scheme], scheme, None
    except ValueError:
        pass
    return None, None, None, url


def _entry(
    source: str,
    title: str,
    secret: str | bytes | None,
    username: str | None,
    url: str | None,
    notes: str | None,
    extra: Mapping[str, str] | None = None,
    kind: str = "password",
    *,
    extra_to_notes: bool = True,
) -> RawEntry:
    """One entry; ``extra`` (custom fields) gives the host, and what is not a host, port or
    protocol is kept as ``name: value`` lines after the notes (nothing silently dropped)."""
    host, port, proto, url_left = _host_of(url)
    kept = [
        f"{k}: {v.strip()}"
        for k, v in (extra or {}).items()
        if v and v.strip() and k.lower() not in (*_HOST_KEYS, "port", "protocol")
    ]
    if extra_to_notes and kept:
        notes = "\n".join([notes, *kept] if notes else kept)
    extra = {k.lower(): v.strip() for k, v in (extra or {}).items() if v and v.strip()}
    if host is None:
        given = next((extra[k] for k in _HOST_KEYS if k in extra), None)
        if given is not None:
            # A host field may be a bare name, host:port, or a URL of its own.
            h, p_, pr, _ = _host_of(given if "://" in given else f"ssh://{given}")
            host = h or given
            port = p_ if h and ("://" in given or given.rsplit(":", 1)[-1].isdigit()) else None
            proto = pr if "://" in given else None
        if extra.get("port", "").isdigit():
            port = int(extra["port"])
        proto = extra.get("protocol") or proto
    return RawEntry(
        source,
        title,
        None if secret is None else Secret(secret),
        username or None,
        url_left or None,
        notes or None,
        host,
        port,
        proto,
        kind,
    )


# ---------------------------------------------------------------- KeePass


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big tree is built: the tree has no
    cycles to collect, and the collector's passes over millions of new objects otherwise
    cost more than the parse itself (2.5x measured on a 12 MB export)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parse_keepass_xml(data: bytes) -> list[RawEntry | Skipped]:
    """KeePass 2 XML (``keepassxc-cli export -f xml``, KeePassXC "Export to XML").

    Entries in the recycle bin and past versions (``<History>``) are not imported; an
    entry's attachments are reported. A DOCTYPE is refused (entity expansion attacks).
    """
    import xml.etree.ElementTree as ET  # DOCTYPE refused before parsing

    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise SourceError("KeePass XML with a DOCTYPE or entities is refused")
    try:
        with _no_gc():
            root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError as err:
        raise SourceError(f"not a KeePass XML export: {err}") from None
    if root.tag != "KeePassFile":
        raise SourceError("not a KeePass XML export: no KeePassFile element")
    bin_uuid = (root.findtext("Meta/RecycleBinUUID") or "").strip()
    out: list[RawEntry | Skipped] = []

    def walk(group: ET.Element, path: str, in_bin: bool) -> None:
        gname = group.findtext("Name") or ""
        here = f"{path}/{gname}" if path else gname
        in_bin = in_bin or (bool(bin_uuid) and (group.findtext("UUID") or "") == bin_uuid)
        for entry in group.findall("Entry"):
            strings = {
                (s.findtext("Key") or ""): (s.findtext("Value") or "")
                for s in entry.findall("String")
            }
            title = strings.pop("Title", "")
            source = f"{here}/{title}"
            if in_bin:
                out.append(Skipped(source, "in the recycle bin"))
                continue
            secret = strings.pop("Password", "")
            totp = [strings.pop(k) for k in ("otp", "TOTP Seed", "TOTP Settings") if k in strings]
            e = _entry(
                source,
                title,
                secret or None,
                strings.pop("UserName", None),
                strings.pop("URL", None),
                strings.pop("Notes", None),
                strings,
            )
            out.append(e)
            if any(totp):
                out.append(Skipped(source, "TOTP seed not imported (the entry was)"))
            if entry.findall("Binary"):
                out.append(Skipped(source, "attachment not imported (the entry was)"))
        for sub in group.findall("Group"):
            walk(sub, here, in_bin)

    for g in root.findall("Root/Group"):
        walk(g, "", False)
    return out


def parse_keepass_csv(data: bytes) -> list[RawEntry | Skipped]:
    """KeePassXC's CSV export: Group, Title, Username, Password, URL, Notes, …"""
    rows = _csv_rows(data)
    need = {"Title", "Password"}
    if not rows or not need <= set(rows[0]):
        raise SourceError("not a KeePassXC CSV export: expected Title and Password columns")
    header = rows[0]
    out: list[RawEntry | Skipped] = []
    for i, r in enumerate(rows[1:], start=2):
        row = dict(zip(header, r, strict=False))
        group = row.get("Group", "")
        title = row.get("Title", "")
        if group.split("/")[-1:] == ["Recycle Bin"]:
            out.append(Skipped(f"{group}/{title}", "in the recycle bin"))
            continue
        out.append(
            _entry(
                f"{group}/{title}" if group else f"line {i}",
                title,
                row.get("Password") or None,
                row.get("Username"),
                row.get("URL"),
                row.get("Notes"),
            )
        )
    return out


def export_kdbx(path: Path, password: Secret, *, keyfile: Path | None = None) -> bytes:
    """Decrypt a KDBX file with the user's ``keepassxc-cli`` into KeePass XML (in memory).

    The master password goes to the tool's stdin; the XML never touches the disk.
    """
    cmd = ["keepassxc-cli", "export", "-q", "-f", "xml"]
    if keyfile is not None:
        cmd += ["-k", str(keyfile)]
    cmd.append(str(path))
    try:
        proc = subprocess.run(
            cmd, input=password.reveal() + b"\n", capture_output=True, check=False, timeout=300
        )
    except FileNotFoundError:
        raise SourceError(
            "keepassxc-cli not found: install KeePassXC, or export to XML from KeePassXC"
        ) from None
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SourceError(f"keepassxc-cli could not open {path.name}: {(msg or ['failed'])[-1]}")
    return proc.stdout


# ---------------------------------------------------------------- Bitwarden


_BW_TYPES = {1: "login", 2: "secure note", 3: "card", 4: "identity", 5: "SSH key"}


def parse_bitwarden_json(data: bytes) -> list[RawEntry | Skipped]:
    """Bitwarden's unencrypted JSON export (``bw export --format json``)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise SourceError("not a Bitwarden JSON export: invalid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise SourceError("not a Bitwarden JSON export: no items")
    if doc.get("encrypted") is True:
        raise SourceError("this Bitwarden export is encrypted: export as unencrypted JSON")
    folders = {
        f.get("id"): str(f.get("name") or "")
        for f in doc.get("folders") or []
        if isinstance(f, dict)
    }
    out: list[RawEntry | Skipped] = []
    for n, it in enumerate(doc["items"], start=1):
        if not isinstance(it, dict):
            out.append(Skipped(f"item {n}", "not an object"))
            continue
        title = str(it.get("name") or "")
        folder = folders.get(it.get("folderId"), "")
        source = f"{folder}/{title}" if folder else title or f"item {n}"
        typ = it.get("type")
        extra = {
            str(f.get("name") or ""): str(f.get("value") or "")
            for f in it.get("fields") or []
            if isinstance(f, dict)
        }
        notes = it.get("notes") if isinstance(it.get("notes"), str) else None
        if typ == 1:
            login = it.get("login") or {}
            uris = [u.get("uri") for u in login.get("uris") or [] if isinstance(u, dict)]
            uris = [u for u in uris if isinstance(u, str) and u]
            e = _entry(
                source, title, login.get("password"), login.get("username"),
                uris[0] if uris else None, notes, extra,
            )  # fmt: skip
            out.append(e)
            if len(uris) > 1:
                out.append(Skipped(source, f"{len(uris) - 1} further URIs not imported"))
            if login.get("totp"):
                out.append(Skipped(source, "TOTP seed not imported (the login was)"))
        elif typ == 2:  # a secure note: its text is the secret
            out.append(_entry(source, title, notes, None, None, None, extra, kind="other"))
        elif typ == 5:
            ssh = it.get("sshKey") or {}
            out.append(
                _entry(source, title, ssh.get("privateKey"), None, None, notes, extra, "ssh-key")
            )
        else:
            out.append(
                Skipped(
                    source,
                    f"{_BW_TYPES.get(typ if isinstance(typ, int) else 0, 'unknown')} items are not imported",
                )
            )
    return out


# ---------------------------------------------------------------- pass


def parse_pass_store(store: Path, *, gpg: str = "gpg") -> list[RawEntry | Skipped]:
    """A ``pass`` store: each ``*.gpg`` decrypted with the user's ``gpg`` (agent, pinentry).

    pass's convention: the first line is the password; ``key: value`` lines after it
    (login/user/username, url, host…) become fields; anything else is notes.
    """
    if not (store / ".gpg-id").is_file():
        raise SourceError(f"{store} is not a pass store (no .gpg-id)")
    out: list[RawEntry | Skipped] = []
    files = sorted(
        p for p in store.rglob("*.gpg") if not any(part.startswith(".") for part in p.parts[-1:])
    )
    for f in files:
        rel = f.relative_to(store).with_suffix("").as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # .git, .extensions
        try:
            proc = subprocess.run(
                [gpg, "--batch", "--quiet", "--decrypt", str(f)],
                capture_output=True,
                check=False,
                timeout=120,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise SourceError(f"{gpg} not found: a pass store needs GnuPG") from None
        if proc.returncode != 0:
            out.append(Skipped(rel, "gpg could not decrypt it"))
            continue
        text = proc.stdout.decode("utf-8", "replace")
        lines = text.split("\n")
        secret, rest = lines[0], lines[1:]
        fields: dict[str, str] = {}
        notes: list[str] = []
        for line in rest:
            k, sep, v = line.partition(":")
            key = k.strip().lower()
            if sep and key and " " not in key and key not in fields and not v.startswith("//"):
                fields[key] = v.strip()
            else:
                notes.append(line)
        username = (
            fields.pop("login", None) or fields.pop("username", None) or fields.pop("user", None)
        )
        url = fields.pop("url", None)
        leftover = [
            f"{k}: {v}" for k, v in fields.items() if k not in (*_HOST_KEYS, "port", "protocol")
        ]
        note = "\n".join([*leftover, *notes]).strip("\n") or None
        title = rel.replace("/", "-")
        out.append(_entry(rel, title, secret, username, url, note, fields, extra_to_notes=False))
    return out


# ---------------------------------------------------------------- generic CSV


def parse_mapping(spec: str) -> dict[str, str]:
    """``name=Title,secret=Password,username=Login`` → {field: column}."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        field, sep, col = part.partition("=")
        field = field.strip().lower()
        if not sep or field not in CSV_FIELDS or not col.strip():
            raise InvalidInput(
                f"bad column mapping {part!r}: use FIELD=COLUMN with FIELD one of "
                + ", ".join(CSV_FIELDS)
            )
        out[field] = col.strip()
    if "secret" not in out:
        raise InvalidInput("the column mapping needs secret=COLUMN")
    return out


def parse_csv(data: bytes, mapping: Mapping[str, str]) -> list[RawEntry | Skipped]:
    """Any CSV with a header row, read through ``mapping`` (see :func:`parse_mapping`)."""
    rows = _csv_rows(data)
    if not rows:
        raise SourceError("the CSV file is empty")
    header = rows[0]
    missing = [c for c in mapping.values() if c not in header]
    if missing:
        raise SourceError(f"CSV has no column {missing[0]!r}")
    out: list[RawEntry | Skipped] = []
    for i, r in enumerate(rows[1:], start=2):
        row = dict(zip(header, r, strict=False))
        got = {f: row.get(c, "") for f, c in mapping.items()}
        host, port_s = got.get("host"), got.get("port")
        port = int(port_s) if port_s and port_s.isdigit() else None
        if port_s and port is None:
            out.append(Skipped(f"line {i}", "port is not a number"))
            continue
        e = _entry(
            f"line {i}", got.get("name", ""), got.get("secret") or None, got.get("username"),
            got.get("url"), got.get("notes"),
            {"host": host or "", "protocol": got.get("protocol") or ""},
            kind=got.get("kind") or "password",
        )  # fmt: skip
        if host and port is not None:
            e = e._replace(port=port)
        out.append(e)
    return out


def _csv_rows(data: bytes) -> list[list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError("the CSV file is not UTF-8") from None
    try:
        return [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    except csv.Error as err:
        raise SourceError(f"malformed CSV: {err}") from None


# ---------------------------------------------------------------- entry point


def read_source(
    fmt: str,
    path: Path,
    *,
    password: Secret | None = None,
    keyfile: Path | None = None,
    mapping: Mapping[str, str] | None = None,
) -> list[RawEntry | Skipped]:
    """Read a whole source of format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown import format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "pass":
        if not path.is_dir():
            raise SourceError(f"{path} is not a directory")
        return parse_pass_store(path)
    if fmt == "kdbx":
        if password is None:
            raise InvalidInput("a KDBX file needs its master password")
        return parse_keepass_xml(export_kdbx(path, password, keyfile=keyfile))
    try:
        if path.stat().st_size > MAX_SOURCE:
            raise SourceError(f"{path.name} is larger than {MAX_SOURCE >> 20} MiB")
        data = path.read_bytes()
    except OSError as err:
        raise SourceError(f"cannot read {path}: {err.strerror}") from None
    if fmt == "keepass-xml":
        return parse_keepass_xml(data)
    if fmt == "keepass-csv":
        return parse_keepass_csv(data)
    if fmt == "bitwarden-json":
        return parse_bitwarden_json(data)
    if mapping is None:
        raise InvalidInput("a generic CSV import needs a column mapping (--map)")
    return parse_csv(data, mapping)

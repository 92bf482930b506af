"""A tar reader for web shards that never ends early without saying so.

Python's `tarfile` takes a damaged header for the end of the archive, reads
a member's claimed size into memory before anything can check it, and calls
a truncated archive a bare `ReadError`. This reader walks the 512-byte
headers itself (ustar, GNU long names, pax `path`/`size`/`linkpath`):

- a header whose checksum is wrong is a TarError naming the file and byte
  offset; with `skip_bad` it is counted (`bad_tar_header`) and reading
  resyncs at the next valid header;
- an archive that ends inside a member or before its end-of-archive blocks is
  a TarError naming the file ("truncated"); with `skip_bad` it is counted
  (`truncated_tar`) and the members before the cut are kept;
- sizes come from the headers, so a member over `max_member_bytes` is marked
  without reading it (a GNU sparse member claiming 6 GiB costs nothing);
- hard and symbolic links resolve to the member they name.

Stdlib only: the captioner's venv imports it too.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import posixpath

BLOCK = 512
MAX_HEADER_DATA = 1 << 20  # pax / GNU long-name payloads larger than this are damage


class TarError(ValueError):
  """A damaged or truncated tar archive (the message names file and offset)."""


@dataclasses.dataclass
class Member:
  name: str
  offset: int        # where its data starts
  size: int          # bytes, as the header claims (the real size for sparse members)
  kind: str          # 'file', 'link', 'dir', 'sparse' (GNU) or 'other' (devices, fifos)
  link: str = ""     # the member a link points at


def _number(field: bytes) -> int:
  if field and field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
    return int.from_bytes(field[1:], "big")
  digits = field.replace(b"\0", b" ").strip()
  return int(digits, 8) if digits else 0


def _checksum_ok(block: bytes) -> bool:
  try:
    stored = _number(block[148:156])
  except ValueError:
    return False
  unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
  signed = unsigned - sum(256 for b in block[:148] + block[156:] if b > 127)
  return stored in (unsigned, signed)


def _text(field: bytes) -> str:
  return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax(data: bytes) -> dict[str, str]:
  """Pax records: b"LEN key=value\n", LEN counting the whole record."""
  fields, pos = {}, 0
  while pos < len(data):
    space = data.index(b" ", pos)
    length = int(data[pos:space])
    key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
    fields[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
    pos += length
  return fields


def scan(f, path: str, skip_bad: bool = False, counts: collections.Counter | None = None):
  """The members of the archive open as `f` (seekable, binary), from the
  headers alone. Damage raises TarError, or with `skip_bad` is counted in
  `counts` (see the module docstring)."""
  counts = counts if counts is not None else collections.Counter()
  f.seek(0, os.SEEK_END)
  file_size = f.tell()
  members, offset, pending, resyncing = [], 0, {}, False

  def truncated(what):
    if not skip_bad:
      raise TarError(f"{path}: truncated tar archive: {what} (file size {file_size} bytes). "
                     f"Re-download it, or pass --skip_bad_members to keep the members before "
                     f"the cut (counted as truncated_tar).")
    counts["truncated_tar"] += 1

  while True:
    f.seek(offset)
    block = f.read(BLOCK)
    if len(block) < BLOCK:
      if not resyncing:
        truncated(f"no end-of-archive blocks, it ends at byte {file_size}")
      return members
    if block == bytes(BLOCK):
      if not resyncing:
        return members
      offset += BLOCK
      continue
    if not _checksum_ok(block):
      if not resyncing:
        if not skip_bad:
          raise TarError(f"{path}: bad tar header at byte offset {offset} (checksum mismatch); "
                         f"the archive is damaged there. Re-download it, or pass "
                         f"--skip_bad_members to skip to the next valid header (counted as "
                         f"bad_tar_header).")
        counts["bad_tar_header"] += 1
        resyncing, pending = True, {}
      offset += BLOCK
      continue
    resyncing = False
    typeflag = block[156:157]
    name = _text(block[:100])
    if block[257:263] == b"ustar\0" and block[345:346] != b"\0":  # POSIX prefix field
      name = _text(block[345:500]) + "/" + name
    size = _number(block[124:136])
    data_offset = offset + BLOCK
    offset = data_offset + (size + BLOCK - 1) // BLOCK * BLOCK
    if data_offset + size > file_size:
      truncated(f"member {name!r} at byte {data_offset - BLOCK} needs {size} bytes")
      return members
    if typeflag in (b"x", b"L", b"K", b"g"):
      if size > MAX_HEADER_DATA:
        raise TarError(f"{path}: extended header at byte {data_offset - BLOCK} claims {size} "
                       f"bytes: the archive is damaged")
      f.seek(data_offset)
      data = f.read(size)
      if typeflag == b"x":
        pending.update(_pax(data))
      elif typeflag == b"L":
        pending["path"] = _text(data)
      elif typeflag == b"K":
        pending["linkpath"] = _text(data)
      continue
    name = pending.get("path", name)
    link = pending.get("linkpath", _text(block[157:257]))
    sparse = typeflag == b"S" or any(k.startswith("GNU.sparse") for k in pending)
    if "size" in pending:
      size = int(pending["size"])
    if sparse:
      size = int(pending.get("GNU.sparse.realsize", pending.get("GNU.sparse.size", 0)) or
                 _number(block[483:495]))
    pending = {}
    kind = {b"0": "file", b"\0": "file", b"7": "file", b"1": "link", b"2": "link",
            b"5": "dir"}.get(typeflag, "other")
    if kind == "link" and typeflag == b"2":  # symbolic: relative to the link's directory
      link = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
    members.append(Member(posixpath.normpath(name), data_offset, size,
                          "sparse" if sparse else kind, posixpath.normpath(link) if link else ""))


def sample_key(name: str) -> str:
  """webdataset's rule: the member name up to the first dot of its basename."""
  directory, base = posixpath.split(name)
  return posixpath.join(directory, base.partition(".")[0])


def read_samples(f, path: str, max_member_bytes: int, skip_bad: bool = False,
                 counts: collections.Counter | None = None):
  """(key, {extension: bytes, or None when the header claims more than
  `max_member_bytes`}) per sample key, in the order keys first appear; a
  key's members need not be adjacent (each group is read when emitted, so
  memory holds one sample). Links resolve to their target; one whose target
  is not a regular member is counted (`unresolved_tar_link`), devices, fifos
  and sparse files under the cap too (`unsupported_tar_member`), a second
  member with the same key and extension too (`duplicate_tar_member`)."""
  counts = counts if counts is not None else collections.Counter()
  members = scan(f, path, skip_bad, counts)
  by_name = {m.name: m for m in members if m.kind == "file"}
  groups = {}
  for member in members:
    target = by_name.get(member.link) if member.kind == "link" else member
    if member.kind == "dir":
      continue
    if target is None:
      counts["unresolved_tar_link"] += 1
      continue
    if member.kind in ("sparse", "other") and target.size <= max_member_bytes:
      counts["unsupported_tar_member"] += 1
      continue
    parts = groups.setdefault(sample_key(member.name), {})
    extension = posixpath.basename(member.name).partition(".")[2].lower()
    if extension in parts:
      counts["duplicate_tar_member"] += 1
      continue
    parts[extension] = target
  for key, parts in groups.items():
    data = {}
    for extension, member in parts.items():
      if member.size > max_member_bytes:
        data[extension] = None
      else:
        f.seek(member.offset)
        data[extension] = f.read(member.size)
    yield key, data

#!/usr/bin/env bash
# Fetch Jane Austen's six novels, public domain, from Debian: the package r-cran-janeaustenr
# 1.0.0-1 (bookworm) ships them as R data (the texts of Project Gutenberg's editions, one line
# per element). Its R lazy-load database is read here without R, and each novel is written as
# plain UTF-8 text to .cache/text/austen/<name>.txt (emma, mansfieldpark, northangerabbey,
# persuasion, prideprejudice, sensesensibility). The novels are in the public domain; the
# package's own code is MIT. Idempotent; works from any cwd. Needs apt's lists: run
# `apt-get update` once first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PKG="r-cran-janeaustenr"
VER="1.0.0-1"
SHA256="df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
DEB_DIR=".cache/debs"
DEB="$DEB_DIR/${PKG}_${VER}_all.deb"
TEXT_DIR=".cache/text/austen"
PYTHON="${PYTHON:-python3}"

if [ ! -f "$TEXT_DIR/prideprejudice.txt" ]; then
    mkdir -p "$DEB_DIR"
    if [ ! -f "$DEB" ]; then
        # apt-get download writes into the current directory.
        (cd "$DEB_DIR" && apt-get download "$PKG=$VER" >&2) || {
            echo "could not download $PKG=$VER (run \`apt-get update\` first)" >&2
            exit 1
        }
    fi
    echo "$SHA256  $DEB" | sha256sum --check --quiet
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    dpkg-deb -x "$DEB" "$tmp"
    "$PYTHON" - "$tmp/usr/lib/R/site-library/janeaustenr/data" "$TEXT_DIR" <<'PY'
"""Reads the novels out of an R lazy-load database (Rdata.rdx: the index, gzip-compressed;
Rdata.rdb: each object zlib-compressed behind its 4-byte length), parsing R's XDR serialization
as far as character vectors and lists need."""
import gzip, os, shutil, struct, sys, zlib

data_dir, text_dir = sys.argv[1:3]

NIL, SYM, LIST, CHAR, LGL, INT, REAL, STR, VEC, REF = 254, 1, 2, 9, 10, 13, 14, 16, 19, 255
ENVIRONMENTS = {242, 241, 253, 251, 252, 250}  # empty, base, global, missing, unbound, base ns


class Reader:
    def __init__(self, data):
        if data[:2] != b"X\n":
            sys.exit(f"not R's XDR serialization: {data[:2]!r}")
        self.data, self.pos, self.refs = data, 2, []
        version = self.int()
        self.int(), self.int()  # writer's and minimal reader's R versions
        if version == 3:
            length = self.int()
            self.pos += length  # native encoding name

    def int(self):
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == NIL or kind in ENVIRONMENTS:
            return None
        if kind == REF:
            return self.refs[(flags >> 8 or self.int()) - 1]
        if kind == SYM:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == LIST:  # a pairlist, as {tag: value}
            out = {}
            while kind == LIST:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out[tag] = self.item()
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
            if kind != NIL:
                sys.exit(f"pairlist ends in R type {kind}")
            return out
        if kind == CHAR:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = self.data[self.pos : self.pos + n]
            self.pos += n
            return raw.decode("latin-1" if flags & (1 << 14) else "utf-8")
        if kind in (STR, VEC, INT, LGL, REAL):
            n = self.int()
            if kind in (STR, VEC):
                value = [self.item() for _ in range(n)]
            else:
                code, width = ("d", 8) if kind == REAL else ("i", 4)
                value = list(struct.unpack_from(f">{n}{code}", self.data, self.pos))
                self.pos += width * n
            if has_attr:
                attributes = self.item()
                if "names" in attributes:
                    return dict(zip(attributes["names"], value))
            return value
        sys.exit(f"unsupported R type {kind}")


def unserialize(data):
    return Reader(data).item()


index = unserialize(gzip.open(os.path.join(data_dir, "Rdata.rdx")).read())
if index["compressed"] != [1]:
    sys.exit(f"expected zlib compression, found {index['compressed']}")
with open(os.path.join(data_dir, "Rdata.rdb"), "rb") as f:
    rdb = f.read()
tmp = text_dir + ".tmp"
shutil.rmtree(tmp, ignore_errors=True)
os.makedirs(tmp)
for name, (offset, length) in index["variables"].items():
    blob = rdb[int(offset) : int(offset) + int(length)]
    (size,) = struct.unpack(">I", blob[:4])
    raw = zlib.decompress(blob[4:])
    if len(raw) != size:
        sys.exit(f"{name}: {len(raw)} bytes unpacked, {size} expected")
    lines = unserialize(raw)
    if not isinstance(lines, list) or not all(isinstance(l, str) for l in lines):
        sys.exit(f"{name} is not a character vector")
    with open(os.path.join(tmp, f"{name}.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{name}: {len(lines)} lines", file=sys.stderr)
shutil.rmtree(text_dir, ignore_errors=True)
os.makedirs(os.path.dirname(text_dir), exist_ok=True)
os.replace(tmp, text_dir)
PY
fi

echo "text: $ROOT/$TEXT_DIR"

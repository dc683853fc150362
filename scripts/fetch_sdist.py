#!/usr/bin/env python3
"""Download one source distribution from the package index and unpack it, without building it.

usage: python3 scripts/fetch_sdist.py NAME VERSION DEST

`pip download` prepares an sdist's metadata, which installs (and for `--no-binary :all:`, even
compiles) its build requirements; this reads the index's JSON listing (PEP 691) instead, checks
the file's sha256 against the index and unpacks it into DEST (DEST/<name>-<version>/...). The
index is $PIP_INDEX_URL when set, else PyPI. Standard library only.
"""
import hashlib
import json
import os
import sys
import tarfile
import urllib.request


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2])
    name, version, dest = sys.argv[1:]
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    norm = name.lower().replace("_", "-").replace(".", "-")
    req = urllib.request.Request(f"{index}/{norm}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    listing = json.load(urllib.request.urlopen(req, timeout=60))
    stem = f"{norm.replace('-', '_')}-{version}"
    files = [f for f in listing.get("files", []) if f["filename"].lower() in (f"{stem}.tar.gz", f"{norm}-{version}.tar.gz")]
    if not files:
        sys.exit(f"{name} {version}: no .tar.gz source distribution on {index}")
    f = files[0]
    os.makedirs(dest, exist_ok=True)
    path = os.path.join(dest, f["filename"])
    print(f"fetching {f['url']}", file=sys.stderr)
    with urllib.request.urlopen(f["url"], timeout=600) as r, open(path, "wb") as out:
        while chunk := r.read(1 << 20):
            out.write(chunk)
    want = f.get("hashes", {}).get("sha256")
    if want:
        h = hashlib.sha256(open(path, "rb").read()).hexdigest()
        if h != want:
            sys.exit(f"{path}: sha256 {h}, the index says {want}")
    with tarfile.open(path) as t:
        t.extractall(dest, filter="data")
    os.remove(path)


if __name__ == "__main__":
    main()

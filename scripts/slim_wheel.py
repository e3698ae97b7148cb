"""Rewrite a wheel keeping only some subfolders of one of its folders, with a RECORD that matches what is left.

    python scripts/slim_wheel.py SRC.whl DST.whl transformers/models auto,llama

What travels to a GPU machine is limited (64 MiB with the model), and two wheels are mostly folders oml-exp never
reads: transformers' model families (13.5 -> about 2.4 MB) and lm_eval's task configs (9.1 -> about 0.7 MB).
Files directly in the folder (its __init__.py) stay.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile


def slim(src: str, dst: str, folder: str, keep: set[str]) -> tuple[int, int]:
    depth = folder.count("/") + 1

    def wanted(name: str) -> bool:
        parts = name.split("/")
        inside = name.startswith(folder + "/") and len(parts) > depth + 1
        return not inside or parts[depth] in keep

    kept, dropped, rows = 0, 0, []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        for info in zin.infolist():
            if info.filename == record:
                continue
            if not wanted(info.filename):
                dropped += 1
                continue
            data = zin.read(info.filename)
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{info.filename},sha256={digest},{len(data)}")
            kept += 1
        zout.writestr(record, "\n".join(rows + [f"{record},,"]) + "\n")
    return kept, dropped


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__.splitlines()[2].strip())
    kept, dropped = slim(sys.argv[1], sys.argv[2], sys.argv[3].strip("/"), set(sys.argv[4].split(",")))
    print(f"{sys.argv[2]}: kept {kept} files, dropped {dropped}")

"""An IR's sidecar (.json beside the .xml): what the export wrote, and the content hashes that tie the .xml and .bin
to it. No OpenVINO or torch here, so every loader (`mixq upscale` included) checks an IR the same way at no
start-up cost."""
from __future__ import annotations

import json
from pathlib import Path

from mixq_nncf.errors import IRError
from mixq_nncf.io_utils import file_hash


def read_meta(xml_path: str | Path) -> dict:
    side = Path(xml_path).with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text())
    except ValueError:
        raise IRError(f"{side}: the IR's sidecar is not valid JSON; re-export the IR "
                      "(or delete the .json to use the .xml/.bin without checks)") from None
    return meta if isinstance(meta, dict) else {}


def verify_ir(xml_path: str | Path) -> dict:
    """The sidecar of an IR after checking that the .xml and .bin are the pair it was written with.

    IRs made elsewhere (no sidecar, or one without hashes) are accepted as they are. Raises IRError naming the
    file and the fix for a missing .xml/.bin or a pair from two exports (an export killed half way)."""
    xml_path = Path(xml_path)
    for f in (xml_path, xml_path.with_suffix(".bin")):
        if not f.is_file():
            raise IRError(f"{f} not found: an OpenVINO IR is a .xml with its .bin beside it; re-export it "
                          "(mixq export) or give the path of a complete IR")
    meta = read_meta(xml_path)
    files = meta.get("files") or {}
    if not isinstance(files, dict) or not set(files) <= {".xml", ".bin"} or \
            not all(isinstance(v, str) for v in files.values()):
        raise IRError(f"{xml_path.with_suffix('.json')}: 'files' must map .xml and .bin to their sha256; re-export "
                      "the IR (or delete the .json to use the .xml/.bin without checks)")
    for suffix, want in files.items():
        f = xml_path.with_suffix(suffix)
        if file_hash(f) != want:
            raise IRError(f"{f} does not belong to {xml_path.with_suffix('.json').name} (content hash differs: an "
                          "export was interrupted or the files were replaced one by one); re-export the IR")
    return meta

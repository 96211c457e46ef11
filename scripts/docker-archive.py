#!/usr/bin/env python3
"""A container image from a directory, as a docker-archive tar (the format of
`docker save`), which `ctr images import` and `podman load` take. No registry
and no image builder are needed: scripts/kubelet-node.sh makes its pause image
with it, and any test image can be made the same way.

    scripts/docker-archive.py OUT.tar NAME:TAG ROOTFS_DIR ENTRYPOINT_JSON [CMD_JSON]

One layer holding ROOTFS_DIR as it is (owner root, mtime 0, so the same tree
gives the same image id).
"""
import hashlib
import io
import json
import os
import sys
import tarfile


def layer_of(rootfs):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for root, dirs, files in os.walk(rootfs):
            dirs.sort()
            files.sort()
            for n in dirs + files:
                p = os.path.join(root, n)
                ti = t.gettarinfo(p, os.path.relpath(p, rootfs))
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mtime = 0
                if ti.isfile():
                    with open(p, "rb") as f:
                        t.addfile(ti, f)
                else:
                    t.addfile(ti)
    return buf.getvalue()


def main(argv):
    if len(argv) not in (5, 6):
        sys.exit(__doc__)
    out, ref, rootfs, entrypoint = argv[1:5]
    cmd = json.loads(argv[5]) if len(argv) == 6 else None
    if not os.path.isdir(rootfs):
        sys.exit(f"docker-archive: ROOTFS_DIR {rootfs} is not a directory")
    layer = layer_of(rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": json.loads(entrypoint),
            "Cmd": cmd,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "scripts/docker-archive.py"}],
    }
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]
    with tarfile.open(out, "w") as t:
        for name, data in (
            (config_name, config_bytes),
            ("layer.tar", layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
    print(f"{out} {ref} {diff_id}")


if __name__ == "__main__":
    main(sys.argv)

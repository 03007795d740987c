"""Fixtures of tests/vm: Debian's kernel, fetched once into a cache that outlives the run.

`apt-get download` needs only apt's package lists (.ci/run's `apt-get update`
as root makes them) and a writable directory, so it works unprivileged too.
The cache is /var/cache/osvirt-ci where it exists or can be made (root), else
~/.cache/osvirt (for uid 65534 in CI, HOME is the tree's copy): a kernel found
in either is used. Only /boot/vmlinuz-* is kept from the package (8 MiB, of
its 400 MiB of modules); the .deb is deleted once it is out.
"""
import glob
import os
import shutil
import subprocess
import tarfile

import pytest

CACHES = ("/var/cache/osvirt-ci", os.path.join(os.path.expanduser("~"), ".cache", "osvirt"))
META_PACKAGE = "linux-image-amd64"


def _cached():
    for cache in CACHES:
        found = sorted(glob.glob(os.path.join(cache, "debian-kernel", "vmlinuz-*")))
        if found:
            return found[-1]
    return None


def _writable_cache():
    for cache in CACHES:
        try:
            os.makedirs(os.path.join(cache, "debian-kernel"), exist_ok=True)
        except OSError:
            continue
        if os.access(os.path.join(cache, "debian-kernel"), os.W_OK):
            return os.path.join(cache, "debian-kernel")
    return None


def _fetch():
    """The path of Debian's vmlinuz, fetched if needed; or a reason it cannot be had."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None, "apt-get and dpkg-deb are not installed (not a Debian system)"
    target = _writable_cache()
    if target is None:
        return None, f"no writable cache directory among {', '.join(CACHES)}"
    depends = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True)
    packages = [line.split(":", 1)[1].strip() for line in depends.stdout.splitlines()
                if line.strip().startswith("Depends:") and "linux-image-" in line]
    if depends.returncode != 0 or not packages:
        return None, (f"apt-cache depends {META_PACKAGE} found no kernel package (apt's lists missing? "
                      f"`apt-get update` as root makes them): {depends.stderr.strip()[:200]}")
    package = packages[0]
    fetched = subprocess.run(["apt-get", "download", package], cwd=target, capture_output=True, text=True)
    debs = glob.glob(os.path.join(target, f"{package}_*.deb"))
    if fetched.returncode != 0 or not debs:
        return None, f"apt-get download {package} failed: {fetched.stderr.strip()[-300:]}"
    try:
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", debs[0]], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    if member.isfile() and os.path.basename(member.name).startswith("vmlinuz-"):
                        source = tar.extractfile(member)
                        partial = os.path.join(target, ".partial")
                        with open(partial, "wb") as out:
                            shutil.copyfileobj(source, out)
                        os.replace(partial, os.path.join(target, os.path.basename(member.name)))
                        break
            proc.stdout.close()  # the rest of the package is not needed: dpkg-deb ends on EPIPE
    finally:
        for deb in debs:
            os.unlink(deb)
    found = _cached()
    return (found, None) if found else (None, f"{debs[0]} holds no boot/vmlinuz-*")


@pytest.fixture(scope="session")
def debian_kernel():
    """The path of Debian's bzImage (package linux-image-amd64), or a skip saying why there is none."""
    path = _cached()
    if path is None:
        path, reason = _fetch()
        if path is None:
            pytest.skip(f"Debian's kernel cannot be had: {reason}")
    return path

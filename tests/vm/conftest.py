"""Fixtures of tests/vm: Debian's kernel (and busybox), fetched once into a cache that outlives the run.

`apt-get download` needs only apt's package lists (.ci/run's `apt-get update`
as root makes them) and a writable directory, so it works unprivileged too.
The cache is /var/cache/osvirt-ci where it exists or can be made (root), else
~/.cache/osvirt (for uid 65534 in CI, HOME is the tree's copy): a file found
in either is used. Only the file needed is kept from a package (the kernel's
/boot/vmlinuz-*, 8 MiB of its 400 MiB of modules); the .deb is deleted once
it is out.
"""
import glob
import os
import shutil
import subprocess
import tarfile

import pytest

CACHES = ("/var/cache/osvirt-ci", os.path.join(os.path.expanduser("~"), ".cache", "osvirt"))
META_PACKAGE = "linux-image-amd64"


def _cached(pattern):
    for cache in CACHES:
        found = sorted(glob.glob(os.path.join(cache, "debian", pattern)))
        if found:
            return found[-1]
    return None


def _writable_cache():
    for cache in CACHES:
        try:
            os.makedirs(os.path.join(cache, "debian"), exist_ok=True)
        except OSError:
            continue
        if os.access(os.path.join(cache, "debian"), os.W_OK):
            return os.path.join(cache, "debian")
    return None


def _fetch(package, member, name):
    """Fetch `package` with apt-get download and keep its file `member` (a path in the package) in the
    cache as `name`: that path, or (None, the reason it cannot be had)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None, "apt-get and dpkg-deb are not installed (not a Debian system)"
    target = _writable_cache()
    if target is None:
        return None, f"no writable cache directory among {', '.join(CACHES)}"
    fetched = subprocess.run(["apt-get", "download", package], cwd=target, capture_output=True, text=True)
    debs = glob.glob(os.path.join(target, f"{package}_*.deb"))
    if fetched.returncode != 0 or not debs:
        return None, (f"apt-get download {package} failed (apt's lists missing? `apt-get update` as root makes "
                      f"them): {fetched.stderr.strip()[-300:]}")
    try:
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", debs[0]], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for entry in tar:
                    if entry.isfile() and entry.name.lstrip("./") == member:
                        partial = os.path.join(target, ".partial")
                        with open(partial, "wb") as out:
                            shutil.copyfileobj(tar.extractfile(entry), out)
                        os.chmod(partial, entry.mode & 0o755)
                        os.replace(partial, os.path.join(target, name))
                        break
            proc.stdout.close()  # the rest of the package is not needed: dpkg-deb ends on EPIPE
    finally:
        for deb in debs:
            os.unlink(deb)
    path = os.path.join(target, name)
    return (path, None) if os.path.exists(path) else (None, f"{os.path.basename(debs[0])} holds no {member}")


def _kernel_package():
    """The kernel package linux-image-amd64 depends on (linux-image-<release>), or None."""
    depends = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True)
    for line in depends.stdout.splitlines():
        if line.strip().startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    return None


@pytest.fixture(scope="session")
def debian_kernel():
    """The path of Debian's bzImage (package linux-image-amd64), or a skip saying why there is none."""
    path = _cached("vmlinuz-*")
    if path is None:
        package = _kernel_package() if shutil.which("apt-cache") else None
        if package is None:
            pytest.skip(f"Debian's kernel cannot be had: apt-cache finds no package {META_PACKAGE} depends on "
                        "(not Debian, or apt's lists missing: `apt-get update` as root makes them)")
        release = package.removeprefix("linux-image-")
        path, reason = _fetch(package, f"boot/vmlinuz-{release}", f"vmlinuz-{release}")
        if path is None:
            pytest.skip(f"Debian's kernel cannot be had: {reason}")
    return path


@pytest.fixture(scope="session")
def debian_busybox():
    """The path of Debian's static busybox (package busybox-static), or a skip saying why there is none."""
    path = _cached("busybox")
    if path is None:
        path, reason = _fetch("busybox-static", "bin/busybox", "busybox")
        if path is None:
            pytest.skip(f"Debian's busybox-static cannot be had: {reason}")
    return path

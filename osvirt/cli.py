"""The `osvirt` command: list, demo NAME|all, info."""
import argparse
import importlib
import json
import pkgutil
import subprocess
import sys

from osvirt import env

__all__ = ["demos", "main"]


def demos():
    """{name: module} for every demo in demos/ (shipped as osvirt.demos), in file order."""
    import osvirt.demos
    found = {}
    for info in sorted(pkgutil.iter_modules(osvirt.demos.__path__), key=lambda i: i.name):
        if info.name[:2].isdigit():
            module = importlib.import_module(f"osvirt.demos.{info.name}")
            found[module.NAME] = module
    return found


def _list(args):
    for name, module in demos().items():
        print(f"{name:14} §{module.SEED:28} {module.SUMMARY}")
    return 0


def _demo(args, extra):
    known = demos()
    if args.name == "all":
        return _demo_all(known, args.json, extra)
    if args.name not in known:
        print(f"osvirt demo: unknown demo {args.name!r}; the demos are: {', '.join(known)}, all",
              file=sys.stderr)
        return 2
    return known[args.name].main((["--json"] if args.json else []) + extra)


def _demo_all(known, as_json, extra):
    """Each demo in its own interpreter: one demo's scheduling policy, signal
    dispositions or affinity cannot leak into the next."""
    results, status = [], 0
    for name in known:
        cmd = [sys.executable, "-m", "osvirt", "demo", name] + (["--json"] if as_json else []) + extra
        proc = subprocess.run(cmd, stdout=subprocess.PIPE if as_json else None)
        if proc.returncode not in (0, 1):  # interrupted or crashed: stop here, say so
            return proc.returncode
        status = max(status, proc.returncode)
        if as_json:
            results.append(json.loads(proc.stdout))
        else:
            print()
    if as_json:
        json.dump({"demos": results, "ok": status == 0}, sys.stdout)
        sys.stdout.write("\n")
    return status


def _info(args):
    facts = env.facts()
    if args.json:
        json.dump(facts, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    can = facts.pop("can")
    width = max(map(len, facts))
    for key, value in facts.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        print(f"{key:{width}}  {value}")
    print("\ncan I ...?")
    for name, answer in can.items():
        print(f"  {name:16} {'yes' if answer['ok'] else 'no ':3}  {answer['reason']}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="osvirt", description=(
        "Operating-system virtualization on real Linux: each demo asks the kernel, "
        "prints what theory expects next to what was observed, and gives a verdict."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,demo,info}")
    sub.add_parser("list", help="list the demos")
    demo = sub.add_parser("demo", help="run a demo, or all of them",
                          epilog="Further arguments go to the demo (see osvirt demo NAME --help).")
    demo.add_argument("name", help="a name from `osvirt list`, or all")
    demo.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    info = sub.add_parser("info", help="what this environment allows, and why")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    args, extra = parser.parse_known_args(argv)
    if args.command != "demo" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "list":
            return _list(args)
        if args.command == "demo":
            return _demo(args, extra)
        return _info(args)
    except KeyboardInterrupt:
        return 130

"""The `osvirt` command: list, demo NAME|all, info."""
import argparse
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import textwrap

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


def _capability_summary(names):
    missing = sorted(set(env.CAPABILITIES) - set(names))
    if not names:
        return "none"
    if len(missing) < len(names):
        return f"all {len(env.CAPABILITIES)} but: {', '.join(missing)}" if missing else "all"
    return ", ".join(names)


def _show(value):
    if isinstance(value, dict) and value.keys() == {"soft", "hard"}:
        return f"{value['soft']} soft, {value['hard']} hard"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _info(args):
    facts = env.facts()
    if args.json:
        json.dump(facts, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    can = facts.pop("can")
    facts["capabilities"] = _capability_summary(facts["capabilities"])
    for key, value in facts.items():
        if isinstance(value, dict):
            print(key)
            for sub, subvalue in value.items():
                print(textwrap.fill(_show(subvalue), 100, initial_indent=f"  {sub:20} ",
                                    subsequent_indent=" " * 23))
        else:
            print(textwrap.fill(_show(value), 100, initial_indent=f"{key:22} ", subsequent_indent=" " * 23))
    print("\ncan I ...?")
    for name, answer in can.items():
        print(f"  {name:20} {'yes' if answer['ok'] else 'no ':3}  {answer['reason']}")
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
    except BrokenPipeError:  # `osvirt info | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1

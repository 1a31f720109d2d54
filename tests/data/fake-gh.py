#!/usr/bin/env python3
"""A stand-in for the GitHub CLI, enough for book/src/examples/trustform.yml: issue
comments kept in $FAKE_GH/comments.json, artifacts in $FAKE_GH/artifacts/<name>/, one
pull request ($FAKE_PR, head $FAKE_HEAD) merged as $FAKE_MERGE. Each call is logged to
$FAKE_GH/calls."""
import json, os, shutil, sys

state = os.environ["FAKE_GH"]
args = sys.argv[1:]
with open(os.path.join(state, "calls"), "a") as log:
    log.write(" ".join(args) + "\n")
db = os.path.join(state, "comments.json")
comments = json.load(open(db)) if os.path.exists(db) else []


def save():
    json.dump(comments, open(db, "w"))


def opt(name):
    return args[args.index(name) + 1] if name in args else None


if args[:2] == ["run", "download"]:
    src = os.path.join(state, "artifacts", opt("--name"))
    if not os.path.isdir(src):
        sys.exit("no artifact " + opt("--name"))
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), opt("--dir"))
    sys.exit(0)
assert args[0] == "api", args
path = [a for a in args[1:] if a.startswith("repos/")][0]
method = opt("-X") or "GET"
jq = opt("--jq")
pr, head, merge = os.environ["FAKE_PR"], os.environ["FAKE_HEAD"], os.environ["FAKE_MERGE"]
if path.endswith(f"/commits/{merge}/pulls"):
    assert jq == ".[0].number", jq
    print(pr)
elif path.endswith(f"/pulls/{pr}"):
    assert jq == ".head.sha", jq
    print(head)
elif path.endswith(f"/issues/{pr}/comments") and method == "GET":
    if "@tsv" in jq:
        for c in comments:
            print(f"{c['id']}\t{c['body'].split(chr(10))[0]}")
    elif jq.endswith("| .body"):
        for c in comments:
            if c["body"].startswith("<!-- trustform-plan "):
                print(c["body"])
    else:
        sys.exit("unknown jq " + jq)
elif method in ("POST", "PATCH"):
    body = open(opt("-F").split("@", 1)[1]).read()
    if method == "POST":
        assert path.endswith(f"/issues/{pr}/comments"), path
        comments.append({"id": 1000 + len(comments), "body": body})
    else:
        cid = int(path.rsplit("/", 1)[1])
        [c for c in comments if c["id"] == cid][0]["body"] = body
    save()
    print("{}")
else:
    sys.exit(f"unknown call {args}")

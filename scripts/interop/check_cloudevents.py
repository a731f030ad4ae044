"""Parses every CloudEvent in a JSON-lines file with the CloudEvents SDK (structured
mode), and every binary-mode event in a JSON-lines file of {"headers": {...}, "body": "..."}.

Usage: python check_cloudevents.py structured <file> | binary <file>
Prints {"parsed": n, "ids": [...], "types": [...]} or exits non-zero on the first event
the SDK refuses.
"""
import json
import sys

from cloudevents.v1.http import from_http


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    ids, types = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            if mode == "structured":
                headers = {"content-type": "application/cloudevents+json"}
                body = line
            else:
                doc = json.loads(line)
                headers, body = doc["headers"], doc["body"]
            event = from_http(headers, body)
            for attr in ("specversion", "id", "source", "type"):
                assert event[attr], attr
            assert event.data is not None
            ids.append(event["id"])
            types.append(event["type"])
    print(json.dumps({"parsed": len(ids), "ids": ids, "types": types}))


if __name__ == "__main__":
    main()

"""Reads mails with Python's email package, the independent decoder of
TestParse_AgreesWithPython: one file path per line on stdin, one JSON object
per line on stdout with the fields ledgerdesk's parser is compared on.

A field Python could not read is null; bytes it could not decode come out as
lone surrogates, which the Go side reads as U+FFFD."""
import email
import email.policy
import json
import sys


def addresses(msg, key):
    out = []
    for h in msg.get_all(key) or []:
        for a in h.addresses:
            out.append([a.display_name, a.addr_spec])
    return out


def join(path, i):
    return str(i) if path == "" else path + "." + str(i)


def attachments(part, path, msg_root, out):
    """Lists [IMAP part path, file name] of every part with a file name; the
    paths follow RFC 3501 section 6.4.5 as ledgerdesk's do."""
    ctype = part.get_content_type()
    if ctype.startswith("multipart/") and part.is_multipart():
        for i, sub in enumerate(part.get_payload(), 1):
            attachments(sub, join(path, i), False, out)
        return
    if msg_root:
        path = join(path, 1)
    name = part.get_filename()
    if name is not None:
        out.append([path, str(name)])
    if ctype in ("message/rfc822", "message/global") and part.is_multipart():
        attachments(part.get_payload(0), path, True, out)


def field(fn):
    try:
        return fn()
    except Exception:  # a field Python cannot read is not compared
        return None


def read(path):
    with open(path, "rb") as f:
        msg = email.message_from_bytes(f.read(), policy=email.policy.default)

    def sender():
        h = msg["from"]
        if h is None or not h.addresses:
            return None
        a = h.addresses[0]
        return [a.display_name, a.addr_spec]

    def subject():
        s = msg["subject"]
        return "" if s is None else str(s)

    def atts():
        out = []
        attachments(msg, "", True, out)
        return out

    return {
        "file": path,
        "subject": field(subject),
        "from": field(sender),
        "to": field(lambda: addresses(msg, "to")),
        "cc": field(lambda: addresses(msg, "cc")),
        "attachments": field(atts),
    }


def main():
    for line in sys.stdin:
        path = line.rstrip("\n")
        if not path:
            continue
        try:
            rec = read(path)
        except Exception as e:
            rec = {"file": path, "error": repr(e)}
        sys.stdout.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()

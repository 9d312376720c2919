#!/usr/bin/python3
"""Writes the fuzzer's seed corpus, test/fuzz/corpus/: RFC 6265 edge cases
and every hostile header of test/unit/gwb_unit.c, one file each.

A seed is a Cookie header; bytes after a NUL are a GWEBalancerCookie list
(NUL-separated names), see gwb_fuzz.c.  The corpus is committed; run this
only to change it (it rewrites the directory):

    /usr/bin/python3 test/fuzz/make_corpus.py
"""

import pathlib
import re
import shutil

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"

ROUTE_63 = ("GWE_Node_63_abcdefghijklmnopqrstuvwxyz0123456789"
            "ABCDEFGHIJKLMNO")
assert len(ROUTE_63) == 63

SEEDS = {
    # --- RFC 6265 and what browsers and httpd send ------------------------
    "plain": b"GWROUTEID=.GWE_Node_1",
    "plain-no-dot": b"GWROUTEID=GWE_Node_1",
    "misspelt-name": b"GWEROUTEID=.GWE_Node_2",
    "quoted": b'GWROUTEID=".GWE_Node_1"',
    "quoted-no-dot": b'GWROUTEID="GWE_Node_1"',
    "quoted-blanks-inside": b'GWROUTEID=" .GWE_Node_1 "',
    "empty-value": b"GWROUTEID=",
    "empty-quoted": b'GWROUTEID=""',
    "dot-only": b"GWROUTEID=.",
    "dot-only-quoted": b'GWROUTEID="."',
    "two-dots": b"GWROUTEID=..",
    "dot-dot-route": b"GWROUTEID=..GWE_Node_1",
    "lone-quote": b'GWROUTEID="',
    "open-quote": b'GWROUTEID=".GWE_Node_1',
    "close-quote": b'GWROUTEID=.GWE_Node_1"',
    "inner-dot": b"GWROUTEID=node.1",
    "inner-quote": b'GWROUTEID=a"b',
    "inner-quote-quoted": b'GWROUTEID=".a"b"',
    "empty-then-real": b"GWROUTEID=; GWROUTEID=.GWE_Node_2",
    "blank-values": b"GWROUTEID=   ;GWEROUTEID=.",
    "semicolons": b"a=b;GWROUTEID=.GWE_Node_1;c=d",
    "semicolon-space": b"a=b; GWROUTEID=.GWE_Node_1; c=d",
    "comma-space": b"a=b, GWROUTEID=.GWE_Node_2, c=d",
    "mixed-separators": b"a=b;GWROUTEID=.x, c=d ;GWEROUTEID=.y,",
    "blanks": b"  GWROUTEID = .GWE_Node_1  ",
    "tabs": b"\tGWROUTEID\t=\t.GWE_Node_1\t",
    "equals-in-value": b"c=3=4; GWROUTEID=.GWE_Node_1=x",
    "name-in-value": b"foo=GWROUTEID=.GWE_Node_2; GWROUTEID=.GWE_Node_1",
    "name-alone": b"GWROUTEID",
    "name-alone-then-real": b"GWROUTEID; GWROUTEID=.GWE_Node_1",
    "splitter": b' a=1;b = 2 ,c=3=4;; lonely ; d= "q" ;=e,',
    "empty-name": b"=.GWE_Node_1; =",
    "separators-only": b" ;;, ,",
    "empty": b"",
    "x-empty-value": b"x=",
    "prefix-name": b"XGWROUTEID=.GWE_Node_1",
    "suffix-name": b"GWROUTEIDX=.GWE_Node_1",
    "lower-case-name": b"gwrouteid=.GWE_Node_1",
    "typo-name": b"GWROUTID=.GWE_Node_1",
    "jsessionid": b"JSESSIONID=abc.GWE_Node_1",
    "quoted-name": b'"GWROUTEID"=.GWE_Node_1',
    "route-prefix": b"GWROUTEID=.GWE_Node_",
    "route-longer": b"GWROUTEID=.GWE_Node_1x",
    "route-10": b"GWROUTEID=.GWE_Node_10",
    "route-case": b"GWROUTEID=.gwe_node_1",
    "route-inner-blank": b"GWROUTEID=.GWE_Node_1 x",
    "stale": b"GWROUTEID=.GWE_Node_3",
    "dup-member": b"GWROUTEID=.dup",
    # --- several route cookies --------------------------------------------
    "stale-then-live": b"GWROUTEID=.GWE_Node_3; GWROUTEID=.GWE_Node_1",
    "unknown-then-live": b"GWROUTEID=.nobody; GWROUTEID=.GWE_Node_2",
    "two-live": b"GWROUTEID=.GWE_Node_2; GWROUTEID=.GWE_Node_1",
    "unknown-stale-stale":
        b"GWROUTEID=.nobody; GWROUTEID=.GWE_Node_4; GWROUTEID=.GWE_Node_3",
    "two-unknown": b"GWROUTEID=.a; GWROUTEID=.b",
    "name-order-live": b"GWEROUTEID=.GWE_Node_2; GWROUTEID=.GWE_Node_1",
    "name-order-live-over-stale":
        b"GWEROUTEID=.GWE_Node_2; GWROUTEID=.GWE_Node_3",
    "name-order-stale": b"GWEROUTEID=.GWE_Node_4; GWROUTEID=.GWE_Node_3",
    "name-order-unknown": b"GWEROUTEID=.b; GWROUTEID=.a",
    "first-live-ends-scan":
        b"GWROUTEID=.GWE_Node_1; GWROUTEID=.GWE_Node_2; GWROUTEID=.x",
    "joined-headers": b"a=1; GWROUTEID=.GWE_Node_3, GWROUTEID=.GWE_Node_2; b=2",
    # --- custom names (after a NUL: the GWEBalancerCookie list) -----------
    "custom-name":
        b"GWROUTEID=.GWE_Node_1; SITEROUTE=.GWE_Node_2\0SITEROUTE",
    "custom-name-absent": b"GWROUTEID=.GWE_Node_1\0SITEROUTE",
    "custom-names-order":
        b"B=.GWE_Node_2; A=.GWE_Node_3; GWEROUTEID=.GWE_Node_1"
        b"\0A\0B\0GWEROUTEID",
    "custom-names-invalid": b"a=.x; b=.y\0a b\0\"q\"\0b\0\0a",
    # --- long values --------------------------------------------------------
    "route-63": b"GWROUTEID=." + ROUTE_63.encode(),
    "route-63-quoted": b'GWROUTEID=".' + ROUTE_63.encode() + b'"',
    "route-64": b"GWROUTEID=." + ROUTE_63.encode() + b"P",
    "route-63-no-dot": b"GWROUTEID=" + ROUTE_63.encode(),
    "long-value-1k": b"GWROUTEID=." + b"A" * 1024 + b"; GWROUTEID=.x",
    # --- control characters and high bytes ----------------------------------
    "ctl-after-route": b"GWROUTEID=.GWE_Node_1\x01",
    "del-in-route": b"GWROUTEID=.GWE_\x7fNode_1",
    "high-byte-route": b"GWROUTEID=.GWE_Node_1\xff",
    "crlf-in-value": b"GWROUTEID=\r\n.GWE_Node_1",
    "ctl-in-name": b"GW\x01ROUTEID=.GWE_Node_1",
    "ctl-cookie-first": b"\x01\x02=\x03; GWROUTEID=.GWE_Node_1",
    "utf8": "GWROUTEID=.GWE_Nöde_1; ñ=é".encode(),
    "nul-in-header": b"GWROUTEID=.GWE_\0Node_1",
    # --- quotes in odd places -----------------------------------------------
    "quotes-then-dot": b'GWROUTEID="".GWE_Node_1',
    "three-quotes": b'GWROUTEID="""',
}

# The hostile headers of gwb_unit.c's test_hostile(), built the same way.
HOSTILE = {
    # A 64 KB value: 65536 bytes in all, with the name at the front.
    "hostile-64k-value": b"GWROUTEID=." + b"A" * (65536 - 11),
    "hostile-500-cookies": b"junk=xxxxxxxx; " * 500 + b"GWROUTEID=.GWE_Node_2",
    "hostile-300-route-cookies":
        b"GWROUTEID=.zz; " * 300 + b"GWROUTEID=.GWE_Node_1",
    "hostile-separators": b";," * 5000,
    "hostile-quotes": b'"' * 5000,
    "hostile-equals": b"=" * 5000,
}


def main():
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir()
    for name, data in list(SEEDS.items()) + list(HOSTILE.items()):
        assert re.fullmatch(r"[a-z0-9-]+", name), name
        (CORPUS / name).write_bytes(data)
    print("%d seeds in %s" % (len(SEEDS) + len(HOSTILE), CORPUS))


if __name__ == "__main__":
    main()

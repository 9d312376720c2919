"""A throwaway certificate authority and a server certificate it signed,
for clients that trust the server as they would a real site, rather than
being told to ignore its certificate."""

import subprocess

from .shipped import make_cert


def make_ca_signed_cert(directory, name="127.0.0.1"):
    """A CA (CN "gwe-balancer test CA") and a certificate it signed for
    the IP address name, as make_cert() makes one.  Returns (CA
    certificate path, certificate path, key path)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    _openssl_req(["-subj", "/CN=gwe-balancer test CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                  "-keyout", str(ca_key), "-out", str(ca)])
    cert, key = make_cert(directory, name, signer=(ca, ca_key))
    return ca, cert, key


def _openssl_req(args):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "1"] + args,
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=60)

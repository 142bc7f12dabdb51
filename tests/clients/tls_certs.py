"""Certificates for the TLS tests, made with the `cryptography` package: a
test CA, the broker's certificate (for 127.0.0.1 and localhost), client
certificates, one from a CA the broker does not trust, one expired."""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(**parts):
    order = [("C", NameOID.COUNTRY_NAME), ("O", NameOID.ORGANIZATION_NAME),
             ("OU", NameOID.ORGANIZATIONAL_UNIT_NAME), ("CN", NameOID.COMMON_NAME)]
    return x509.Name([x509.NameAttribute(oid, parts[k]) for k, oid in order if k in parts])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject, key, issuer, issuer_key, ca=False, usage=None, san=None, days=(-1, 30)):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=days[0]))
         .not_valid_after(now + datetime.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage(usage if isinstance(usage, list) else [usage]), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path, *blobs):
    with open(path, "wb") as f:
        for b in blobs:
            f.write(b)
    return path


class Certs:
    """Writes every file under `directory`; attributes are their paths."""

    def __init__(self, directory):
        self.dir = directory
        ca_key = _key()
        ca_name = _name(O="Sluice Test", CN="Sluice Test CA")
        ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True, days=(-1, 60))
        self._ca, self._ca_key = ca, ca_key
        self.ca = _write(os.path.join(directory, "ca.pem"), self._pem(ca))
        # The broker's key store: its certificate, then its key.
        self.server_key = _key()
        self.keystore = os.path.join(directory, "broker.pem")
        self.write_keystore("broker")
        # Clients.
        self.alice = self.client("alice", _name(C="US", O="Example", OU="eng", CN="alice"))
        other_key = _key()
        other_name = _name(CN="Someone Else's CA")
        other_ca = _cert(other_name, other_key, other_name, other_key, ca=True)
        self.untrusted = self.client("untrusted", _name(CN="mallory"), issuer=(other_ca, other_key))
        self.expired = self.client("expired", _name(CN="old"), days=(-30, -1))

    @staticmethod
    def _pem(cert):
        return cert.public_bytes(serialization.Encoding.PEM)

    def write_keystore(self, common_name):
        """(Re)writes the broker's key store with a certificate named
        `common_name` (a reload test changes it)."""
        cert = _cert(_name(O="Sluice Test", CN=common_name), self.server_key, self._ca.subject, self._ca_key,
                     usage=ExtendedKeyUsageOID.SERVER_AUTH,
                     san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
        _write(self.keystore + ".tmp", self._pem(cert), _pem_key(self.server_key))
        os.replace(self.keystore + ".tmp", self.keystore)

    def node(self, label, common_name, ips):
        """A key store for a node of a secured cluster: one certificate
        for its listeners and for its own connections to other nodes
        (server and client use), naming the node's addresses."""
        key = _key()
        cert = _cert(_name(O="Sluice Test", CN=common_name), key, self._ca.subject, self._ca_key,
                     usage=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                     san=[x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips])
        return _write(os.path.join(self.dir, f"{label}.pem"), self._pem(cert), _pem_key(key))

    def client(self, label, subject, issuer=None, days=(-1, 30)):
        key = _key()
        ca, ca_key = issuer or (self._ca, self._ca_key)
        cert = _cert(subject, key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH, days=days)
        cert_path = _write(os.path.join(self.dir, f"{label}.crt"), self._pem(cert))
        key_path = _write(os.path.join(self.dir, f"{label}.key"), _pem_key(key))
        both = _write(os.path.join(self.dir, f"{label}.pem"), self._pem(cert), _pem_key(key))
        return {"cert": cert_path, "key": key_path, "pem": both}

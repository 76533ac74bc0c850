"""Symmetric encryption of datastore values, byte-compatible with StackStorm's.

StackStorm (``st2common/util/crypto.py``) kept keyczar's format when it moved
to the ``cryptography`` package, and so do we, so a key file and the values
encrypted with it move between the two platforms unchanged:

- The key file is keyczar's JSON, as ``st2-generate-symmetric-crypto-key``
  writes it: ``{"hmacKey": {"hmacKeyString": <b64>, "size": 256},
  "aesKeyString": <b64>, "mode": "CBC", "size": 256}``, both keys in URL-safe
  base64 without padding. AES keys of 128, 192 and 256 bits are read.
- A value is ``header (5 bytes "00000") + IV (16) + AES-CBC(PKCS#5-padded UTF-8)
  + HMAC-SHA1(header + IV + ciphertext)``, written as upper-case hex.

The signature is checked before anything is decrypted, so a wrong key or a
corrupted value is refused with the same clear error and never half-decoded.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from st2common.exceptions import ConfigError, ValidationError

LOG = logging.getLogger(__name__)

HEADER = b"00000"  # keyczar's version byte and key hash; only its length matters to readers
BLOCK_SIZE = 16
SIGNATURE_SIZE = 20  # HMAC-SHA1
DEFAULT_KEY_SIZE = 256
MINIMUM_KEY_SIZE = 128
KEY_FILE_MODE = 0o600


def _b64_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64_decode(text: str) -> bytes:
    text = "".join(text.split())
    if len(text) % 4 == 1:
        raise ValueError("truncated base64 text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class AESKey:
    """An AES key and its HMAC signing key, as keyczar's JSON key file holds them."""

    aes_key_string: str
    hmac_key_string: str
    hmac_key_size: int = DEFAULT_KEY_SIZE
    mode: str = "CBC"
    size: int = DEFAULT_KEY_SIZE

    @classmethod
    def generate(cls, size: int = DEFAULT_KEY_SIZE) -> "AESKey":
        """A fresh random key pair of size bits."""
        if size not in (128, 192, 256):
            raise ValidationError(f"AES key size must be 128, 192 or 256 bits, not {size}", field="size")
        return cls(_b64_encode(os.urandom(size // 8)), _b64_encode(os.urandom(size // 8)), size, "CBC", size)

    @classmethod
    def from_json(cls, text: str, source: str = "key") -> "AESKey":
        """Parse keyczar's JSON key format; ConfigError naming source when it is not one."""
        try:
            data = json.loads(text)
            key = cls(aes_key_string=data["aesKeyString"], hmac_key_string=data["hmacKey"]["hmacKeyString"],
                      hmac_key_size=int(data["hmacKey"]["size"]), mode=str(data["mode"]).upper(),
                      size=int(data["size"]))
            aes, signing = key.aes_key_bytes, key.hmac_key_bytes
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise _key_error(f"invalid or malformed key file {source}: {type(exc).__name__}: {exc}") from None
        if key.mode != "CBC":
            raise _key_error(f"key file {source}: unsupported mode {key.mode} (only CBC)")
        if key.size < MINIMUM_KEY_SIZE or len(aes) * 8 != key.size or len(aes) not in (16, 24, 32):
            raise _key_error(f"key file {source}: the AES key is {len(aes) * 8} bits, declared {key.size}")
        if not signing:
            raise _key_error(f"key file {source}: the HMAC key is empty")
        return key

    def to_json(self) -> str:
        """The key in keyczar's JSON key file format."""
        return json.dumps({
            "hmacKey": {"hmacKeyString": self.hmac_key_string, "size": self.hmac_key_size},
            "aesKeyString": self.aes_key_string,
            "mode": self.mode.upper(),
            "size": self.size,
        })

    @property
    def aes_key_bytes(self) -> bytes:
        return _b64_decode(self.aes_key_string)

    @property
    def hmac_key_bytes(self) -> bytes:
        return _b64_decode(self.hmac_key_string)

    def __repr__(self) -> str:
        # Never the key material: a repr ends up in logs and tracebacks.
        return f"<AESKey mode={self.mode} size={self.size} hmac_key_size={self.hmac_key_size}>"


def _key_error(message: str) -> ConfigError:
    return ConfigError("keyvalue", "encryption_key_path", message)


def read_key(path: str | os.PathLike) -> AESKey:
    """The key in a key file; ConfigError naming the file when it is missing or malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _key_error(f"datastore key file {path} does not exist") from None
    except OSError as exc:
        raise _key_error(f"cannot read datastore key file {path}: {exc.strerror}") from None
    return AESKey.from_json(text, str(path))


def write_key_file(path: str | os.PathLike, size: int = DEFAULT_KEY_SIZE) -> bool:
    """Create a key file readable by its owner only (0600); False when one already exists.

    The file is created exclusively, so two processes racing at start-up
    cannot each write a different key and leave values nobody can decrypt.
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = AESKey.generate(size)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key.to_json())
    # The umask may have taken bits away, never added any; say the mode outright all the same.
    os.chmod(path, KEY_FILE_MODE)
    LOG.info("generated datastore key file %s", path)
    return True


def _pad(data: bytes) -> bytes:
    count = BLOCK_SIZE - len(data) % BLOCK_SIZE
    return data + bytes([count]) * count


def _unpad(data: bytes) -> bytes:
    count = data[-1] if data else 0
    if not 1 <= count <= BLOCK_SIZE or data[-count:] != bytes([count]) * count:
        raise ValueError("bad padding")
    return data[:-count]


def _signature(key: AESKey, message: bytes) -> bytes:
    signer = hmac.HMAC(key.hmac_key_bytes, hashes.SHA1())  # noqa: S303 - StackStorm's format
    signer.update(message)
    return signer.finalize()


def symmetric_encrypt(key: AESKey, plaintext: str | bytes) -> str:
    """plaintext encrypted and signed with key, as upper-case hex (StackStorm's stored form)."""
    data = plaintext.encode("utf-8") if isinstance(plaintext, str) else bytes(plaintext)
    iv = os.urandom(BLOCK_SIZE)
    encryptor = Cipher(algorithms.AES(key.aes_key_bytes), modes.CBC(iv)).encryptor()
    message = HEADER + iv + encryptor.update(_pad(data)) + encryptor.finalize()
    return binascii.hexlify(message + _signature(key, message)).decode("ascii").upper()


def symmetric_decrypt(key: AESKey, ciphertext: str | bytes) -> str:
    """The text symmetric_encrypt encrypted; ValidationError when the key or the value is wrong."""
    try:
        raw = binascii.unhexlify(ciphertext.strip() if isinstance(ciphertext, (str, bytes)) else ciphertext)
    except (binascii.Error, TypeError, ValueError):
        raise ValidationError("the value is not an encrypted datastore value (not hex)", field="value") from None
    body = raw[len(HEADER):]
    if len(body) < 2 * BLOCK_SIZE + SIGNATURE_SIZE or (len(body) - SIGNATURE_SIZE) % BLOCK_SIZE:
        raise ValidationError("the encrypted value is malformed (too short or truncated)", field="value")
    message, signature = raw[:-SIGNATURE_SIZE], raw[-SIGNATURE_SIZE:]
    verifier = hmac.HMAC(key.hmac_key_bytes, hashes.SHA1())  # noqa: S303 - StackStorm's format
    verifier.update(message)
    try:
        verifier.verify(signature)
    except InvalidSignature:
        raise ValidationError("the encrypted value does not match the datastore key "
                              "(it was encrypted with another key, or it is corrupted)", field="value") from None
    iv, encrypted = body[:BLOCK_SIZE], body[BLOCK_SIZE:-SIGNATURE_SIZE]
    decryptor = Cipher(algorithms.AES(key.aes_key_bytes), modes.CBC(iv)).decryptor()
    try:
        return _unpad(decryptor.update(encrypted) + decryptor.finalize()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("the encrypted value decrypts to garbage (wrong key)", field="value") from None

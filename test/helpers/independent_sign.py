#!/usr/bin/python3
"""Independent signer for BACEN's two XMLDSig profiles (docs/bacen.md §3.1 SPI, §3.2 DICT).

Built only from libxml2's exclusive c14n (python3-lxml), hashlib and the openssl command line, so that messages it
signs test the project's verifier against code that shares nothing with it (not even lxml_c14n.py).

  independent_sign.py spi|dict --key KEY.pem --issuer "CN=..., O=..., C=BR" --serial DECIMAL IN OUT

Its layout deliberately differs from a compact signer's: a newline between every element inside ds:Signature, the
SignatureValue wrapped at 64 columns, and a newline around the ds:Signature where it is inserted. Those text nodes
are signed content (SignedInfo, KeyInfo) or survive the enveloped-signature transform (AppHdr/Sgntr, the DICT root),
so a verifier that drops or adds whitespace anywhere fails on these messages.
"""

import argparse
import base64
import hashlib
import re
import subprocess
import sys

from lxml import etree

DS = 'http://www.w3.org/2000/09/xmldsig#'
EXC_C14N = 'http://www.w3.org/2001/10/xml-exc-c14n#'
ENVELOPED = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature'
RSA_SHA256 = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256'
SHA256 = 'http://www.w3.org/2001/04/xmlenc#sha256'
KEY_INFO_ID = 'key-info-id'


class SignError(Exception):
    pass


def ds(local):
    return '{%s}%s' % (DS, local)


def local_name(el):
    return etree.QName(el).localname if isinstance(el.tag, str) else None


def element_children(el):
    return [c for c in el if isinstance(c.tag, str)]


def exc_c14n(node):
    return etree.tostring(node, method='c14n', exclusive=True, with_comments=False)


def digest(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode('ascii')


def build_signature(issuer, serial, references):
    """references: (uri or None, [transform algorithms]) per Reference, in order. Returns (Signature, DigestValues)."""
    sig = etree.Element(ds('Signature'), nsmap={'ds': DS})
    signed_info = etree.SubElement(sig, ds('SignedInfo'))
    etree.SubElement(signed_info, ds('CanonicalizationMethod'), Algorithm=EXC_C14N)
    etree.SubElement(signed_info, ds('SignatureMethod'), Algorithm=RSA_SHA256)
    digest_values = []
    for uri, transforms in references:
        ref = etree.SubElement(signed_info, ds('Reference'))
        if uri is not None:
            ref.set('URI', uri)
        tr = etree.SubElement(ref, ds('Transforms'))
        for alg in transforms:
            etree.SubElement(tr, ds('Transform'), Algorithm=alg)
        etree.SubElement(ref, ds('DigestMethod'), Algorithm=SHA256)
        digest_values.append(etree.SubElement(ref, ds('DigestValue')))
    etree.SubElement(sig, ds('SignatureValue'))
    key_info = etree.SubElement(sig, ds('KeyInfo'), Id=KEY_INFO_ID)
    issuer_serial = etree.SubElement(etree.SubElement(key_info, ds('X509Data')), ds('X509IssuerSerial'))
    etree.SubElement(issuer_serial, ds('X509IssuerName')).text = issuer
    etree.SubElement(issuer_serial, ds('X509SerialNumber')).text = serial
    for el in sig.iter():
        kids = element_children(el)
        if kids:
            el.text = '\n'
            for k in kids:
                k.tail = '\n'
    return sig, digest_values


def digest_without(node_to_digest, sig):
    """Digest of node_to_digest with sig detached, as the enveloped-signature transform sees it.

    Done in place (detach, canonicalise, re-attach) rather than on a copy: the text after sig must stay where it
    was, which lxml keeps on sig.tail, so it is moved onto the preceding node while sig is out.
    """
    parent = sig.getparent()
    index = parent.index(sig)
    prev = sig.getprevious()
    tail = sig.tail
    saved_prev = prev.tail if prev is not None else parent.text
    merged = (saved_prev or '') + (tail or '')
    parent.remove(sig)
    if prev is not None:
        prev.tail = merged
    else:
        parent.text = merged
    try:
        return digest(exc_c14n(node_to_digest))
    finally:
        if prev is not None:
            prev.tail = saved_prev
        else:
            parent.text = saved_prev
        parent.insert(index, sig)
        sig.tail = tail


def rsa_sha256_sign(key_path, data):
    proc = subprocess.run(['openssl', 'dgst', '-sha256', '-sign', key_path], input=data, capture_output=True,
                          timeout=30)
    if proc.returncode != 0:
        raise SignError('openssl dgst -sign failed: ' + proc.stderr.decode('utf-8', 'replace'))
    return proc.stdout


def wrap64(b64):
    return '\n' + '\n'.join(b64[i:i + 64] for i in range(0, len(b64), 64)) + '\n'


def sign_spi(tree, issuer, serial):
    root = tree.getroot()
    parts = {local_name(c): c for c in element_children(root)}
    app_hdr, document = parts.get('AppHdr'), parts.get('Document')
    if app_hdr is None or document is None:
        raise SignError('SPI messages need Envelope/AppHdr and Envelope/Document')
    sgntr = [c for c in element_children(app_hdr) if local_name(c) == 'Sgntr']
    if len(sgntr) != 1:
        raise SignError('AppHdr must have exactly one Sgntr')
    sgntr = sgntr[0]
    if element_children(sgntr) or (sgntr.text or '').strip():
        raise SignError('AppHdr/Sgntr is not empty: already signed?')
    sig, digest_values = build_signature(issuer, serial, [
        ('#' + KEY_INFO_ID, [EXC_C14N]),
        ('', [ENVELOPED, EXC_C14N]),
        (None, [EXC_C14N]),
    ])
    sgntr.text = '\n'
    sgntr.append(sig)
    sig.tail = '\n'
    key_info = sig.find(ds('KeyInfo'))
    digest_values[0].text = digest(exc_c14n(key_info))
    # Ref 2 is "" but means the AppHdr (BCB profile), Ref 3 has no URI and means the Document.
    digest_values[1].text = digest_without(app_hdr, sig)
    digest_values[2].text = digest(exc_c14n(document))
    return sig


def sign_dict(tree, issuer, serial):
    root = tree.getroot()
    if root.find('.//' + ds('Signature')) is not None:
        raise SignError('the document already carries a ds:Signature')
    sig, digest_values = build_signature(issuer, serial, [
        ('#' + KEY_INFO_ID, [EXC_C14N]),
        ('', [ENVELOPED, EXC_C14N]),
    ])
    kids = element_children(root)
    first = kids[0] if kids else None
    is_placeholder = (first is not None and first.tag == 'Signature' and not element_children(first)
                      and not (first.text or '').strip() and root.index(first) == 0)
    if is_placeholder:
        # BCB's examples carry an empty un-namespaced <Signature></Signature>: the signature takes its place.
        tail = first.tail
        root.replace(first, sig)
        sig.tail = tail
    else:
        root.insert(0, sig)
        sig.tail = '\n' + (root.text or '')
    key_info = sig.find(ds('KeyInfo'))
    digest_values[0].text = digest(exc_c14n(key_info))
    digest_values[1].text = digest_without(tree, sig)
    return sig


def main(argv):
    ap = argparse.ArgumentParser(description='independent BACEN XMLDSig signer (lxml + openssl)')
    ap.add_argument('profile', choices=['spi', 'dict'])
    ap.add_argument('--key', required=True, help='PEM private key (RSA)')
    ap.add_argument('--issuer', required=True, help='X509IssuerName text')
    ap.add_argument('--serial', required=True, help='X509SerialNumber, decimal')
    ap.add_argument('input')
    ap.add_argument('output')
    args = ap.parse_args(argv)
    if not re.fullmatch(r'[0-9]+', args.serial):
        print('--serial must be decimal digits', file=sys.stderr)
        return 2
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_blank_text=False)
    try:
        tree = etree.parse(args.input, parser)
        sig = (sign_spi if args.profile == 'spi' else sign_dict)(tree, args.issuer, args.serial)
        # The SignatureValue covers SignedInfo as canonicalised in place, namespace context and all.
        signed_info = exc_c14n(sig.find(ds('SignedInfo')))
        value = base64.b64encode(rsa_sha256_sign(args.key, signed_info)).decode('ascii')
        sig.find(ds('SignatureValue')).text = wrap64(value)
    except (etree.XMLSyntaxError, OSError, SignError, subprocess.TimeoutExpired) as e:
        print(f'cannot sign {args.input}: {e}', file=sys.stderr)
        return 2
    with open(args.output, 'wb') as f:
        f.write(etree.tostring(tree, xml_declaration=True, encoding='UTF-8'))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

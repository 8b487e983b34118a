#!/usr/bin/python3
"""Independent exclusive canonicaliser and BACEN digest calculator built on libxml2 (python3-lxml).

This file is the reference the project's own TypeScript canonicaliser and signer are tested against, so it must
never import or reuse project code. Modes:

  c14n FILE [--xpath EXPR] [--remove-signature]
      exc-c14n (no comments) of the first node EXPR selects (default: the whole document, top-level PIs included).
      --remove-signature first deletes every ds:Signature element, as the enveloped-signature transform does.
  spi-digests FILE      JSON {keyInfo, appHdr, document}: base64 SHA-256 of the SPI profile's three references.
  dict-digests FILE     JSON {keyInfo, document}: base64 SHA-256 of the DICT profile's two references.
  signedinfo-c14n FILE  exc-c14n of ds:SignedInfo where it stands in the document (the bytes RSA signs).
  sig-info FILE         JSON description of the first ds:Signature (where it sits, its algorithms, references,
                        digest and signature values, key info), so tests can check a signature's shape without
                        parsing XML with the code under test.

Canonical bytes are written to stdout unchanged. Exit status 2 means bad usage or input.
"""

import argparse
import base64
import copy
import hashlib
import json
import sys

from lxml import etree

DSIG_NS = 'http://www.w3.org/2000/09/xmldsig#'
NSMAP = {'ds': DSIG_NS}


def parse(path):
    # Entities are neither resolved nor fetched: the inputs are untrusted test material and XXE must not leak in.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                             remove_blank_text=False, remove_comments=False, remove_pis=False)
    return etree.parse(path, parser)


def c14n(node):
    return etree.tostring(node, method='c14n', exclusive=True, with_comments=False)


def remove_keeping_tail(el):
    """Delete el and its subtree but keep the text node that follows it.

    lxml stores that text as el.tail, so a plain parent.remove(el) would also drop it; the enveloped-signature
    transform removes only the element.
    """
    parent = el.getparent()
    tail = el.tail or ''
    prev = el.getprevious()
    if tail:
        if prev is not None:
            prev.tail = (prev.tail or '') + tail
        else:
            parent.text = (parent.text or '') + tail
    parent.remove(el)


def remove_signatures(tree):
    for sig in tree.xpath('//ds:Signature', namespaces=NSMAP):
        remove_keeping_tail(sig)


def select(tree, expr):
    found = tree.xpath(expr, namespaces=NSMAP)
    if not isinstance(found, list) or len(found) == 0:
        raise SystemExit(f'no node matches {expr}')
    node = found[0]
    if not isinstance(node, etree._Element):
        raise SystemExit(f'{expr} selects a non-element')
    return node


def b64sha256(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode('ascii')


def key_info_digest(tree):
    found = tree.xpath('//ds:Signature/ds:KeyInfo', namespaces=NSMAP)
    return b64sha256(c14n(found[0])) if found else None


def spi_digests(tree):
    # Ref 2 ("") means the AppHdr with the signature removed (the emptied Sgntr stays); Ref 3 (no URI) the Document.
    stripped = copy.deepcopy(tree)
    remove_signatures(stripped)
    return {
        'keyInfo': key_info_digest(tree),
        'appHdr': b64sha256(c14n(select(stripped, '/*/*[local-name()="AppHdr"]'))),
        'document': b64sha256(c14n(select(tree, '/*/*[local-name()="Document"]'))),
    }


def dict_digests(tree):
    key_info = key_info_digest(tree)
    stripped = copy.deepcopy(tree)
    remove_signatures(stripped)
    return {'keyInfo': key_info, 'document': b64sha256(c14n(stripped))}


def text_of(node, expr):
    found = node.xpath(expr, namespaces=NSMAP)
    return ''.join(found[0].itertext()) if found else None


def sig_info(tree):
    sigs = tree.xpath('//ds:Signature', namespaces=NSMAP)
    info = {
        'count': len(sigs),
        # Un-namespaced <Signature> elements, like the placeholder in BCB's DICT examples.
        'placeholders': len(tree.xpath('//*[local-name()="Signature" and namespace-uri()=""]')),
    }
    if not sigs:
        return info
    sig = sigs[0]
    parent = sig.getparent()
    path = [etree.QName(a).localname for a in reversed(list(sig.iterancestors()))]
    siblings = [c for c in parent if isinstance(c.tag, str)]
    info.update({
        'prefix': sig.prefix,
        'parentPath': '/' + '/'.join(path),
        'elementIndex': siblings.index(sig),
        'canonicalizationMethod': sig.xpath('string(ds:SignedInfo/ds:CanonicalizationMethod/@Algorithm)',
                                            namespaces=NSMAP),
        'signatureMethod': sig.xpath('string(ds:SignedInfo/ds:SignatureMethod/@Algorithm)', namespaces=NSMAP),
        'references': [{
            'uri': ref.get('URI'),
            'transforms': ref.xpath('ds:Transforms/ds:Transform/@Algorithm', namespaces=NSMAP),
            'digestMethod': ref.xpath('string(ds:DigestMethod/@Algorithm)', namespaces=NSMAP),
            'digestValue': ''.join((text_of(ref, 'ds:DigestValue') or '').split()),
        } for ref in sig.xpath('ds:SignedInfo/ds:Reference', namespaces=NSMAP)],
        'signatureValue': ''.join((text_of(sig, 'ds:SignatureValue') or '').split()),
        'keyInfoId': sig.xpath('string(ds:KeyInfo/@Id)', namespaces=NSMAP),
        'issuerName': text_of(sig, 'ds:KeyInfo/ds:X509Data/ds:X509IssuerSerial/ds:X509IssuerName'),
        'serialNumber': text_of(sig, 'ds:KeyInfo/ds:X509Data/ds:X509IssuerSerial/ds:X509SerialNumber'),
    })
    return info


def main(argv):
    ap = argparse.ArgumentParser(description='libxml2 exclusive c14n and BACEN XMLDSig digests')
    sub = ap.add_subparsers(dest='mode', required=True)
    p = sub.add_parser('c14n')
    p.add_argument('file')
    p.add_argument('--xpath')
    p.add_argument('--remove-signature', action='store_true')
    for mode in ('spi-digests', 'dict-digests', 'signedinfo-c14n', 'sig-info'):
        sub.add_parser(mode).add_argument('file')
    args = ap.parse_args(argv)

    try:
        tree = parse(args.file)
    except (etree.XMLSyntaxError, OSError) as e:
        print(f'cannot parse {args.file}: {e}', file=sys.stderr)
        return 2

    out = sys.stdout.buffer
    if args.mode == 'c14n':
        if args.remove_signature:
            remove_signatures(tree)
        out.write(c14n(select(tree, args.xpath) if args.xpath else tree))
    elif args.mode == 'spi-digests':
        out.write(json.dumps(spi_digests(tree)).encode('ascii'))
    elif args.mode == 'dict-digests':
        out.write(json.dumps(dict_digests(tree)).encode('ascii'))
    elif args.mode == 'sig-info':
        out.write(json.dumps(sig_info(tree), ensure_ascii=False).encode('utf-8'))
    else:
        out.write(c14n(select(tree, '//ds:Signature/ds:SignedInfo')))
    out.flush()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
"""gen_text_fix_tables.py: writes text/text_fix_tables.h, the data tables of text/text_fix*.c.

text/text_fix*.c reimplement ftfy.fix_text() (python-ftfy 6.3.1, default TextFixerConfig), the first
step of CLIP's basic_clean(). ftfy is not packaged in Debian, so its tables are rebuilt here:
  - from Python's standard library where ftfy derives them from it
      HTML_ENTITIES      (ftfy/chardata.py: html.entities.html5 names ending in ';', plus the
                          all-caps variants of lowercase names that html.unescape leaves alone)
      WIDTH_MAP          (ftfy/chardata.py: NFKC of U+FF01..U+FFEF where it differs, U+3000 -> ' ')
      the CHARMAP_ENCODINGS (ftfy/chardata.py) and its "sloppy" codecs (ftfy/bad_codecs/sloppy.py:
                          bytes a codec leaves undefined decode as Latin-1, byte 1A as U+FFFD)
      (numeric references &#NNN; follow html.unescape through text/html_charref.h, whose tables
       text/gen_tokenizer_tables.py writes)
  - from ftfy's own curated character classes, written below by Unicode name as ftfy writes them
      MOJIBAKE_CATEGORIES (ftfy/badness.py) and UTF8_CLUES (ftfy/chardata.py); the UTF8_CLUES are
      computed from the encodings they describe and checked against ftfy's lists.
Run with Debian's /usr/bin/python3 (3.11, Unicode 14.0): /usr/bin/python3 text/gen_text_fix_tables.py
"""
import html
import html.entities
import os
import re
import sys
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_tokenizer_tables import c_string, ranges  # noqa: E402

N = unicodedata.lookup

# ---- ftfy/chardata.py: CHARMAP_ENCODINGS, in the order ftfy tries them -----------------------------
# (ftfy name, Python codec, sloppy?)
CHARMAP_ENCODINGS = [
    ('latin-1', 'latin-1', False),
    ('sloppy-windows-1252', 'cp1252', True),
    ('sloppy-windows-1251', 'cp1251', True),
    ('sloppy-windows-1250', 'cp1250', True),
    ('sloppy-windows-1253', 'cp1253', True),
    ('sloppy-windows-1254', 'cp1254', True),
    ('sloppy-windows-1257', 'cp1257', True),
    ('iso-8859-2', 'iso8859_2', False),
    ('macroman', 'mac_roman', False),
    ('cp437', 'cp437', False),
]


def decoding_table(codec, sloppy):
    if not sloppy:
        return bytes(range(256)).decode(codec)
    chars = list(bytes(range(256)).decode('latin-1'))
    for i, c in enumerate(bytes(range(256)).decode(codec, errors='replace')):
        if c != '\ufffd':
            chars[i] = c
    chars[0x1A] = '\ufffd'
    return ''.join(chars)


# ---- ftfy/badness.py (6.3.1): MOJIBAKE_CATEGORIES ----------------------------------------------------
def names(*ns):
    return ''.join(N(n) for n in ns)


def crange(a, b):
    return ''.join(chr(c) for c in range(ord(a), ord(b) + 1))


def cap(*ns):
    return names(*('LATIN CAPITAL LETTER ' + n for n in ns))


def small(*ns):
    return names(*('LATIN SMALL LETTER ' + n for n in ns))


CATEGORIES = {
    'common': names('NO-BREAK SPACE', 'SOFT HYPHEN', 'MIDDLE DOT', 'ACUTE ACCENT', 'EN DASH',
                    'EM DASH', 'HORIZONTAL BAR', 'HORIZONTAL ELLIPSIS',
                    'RIGHT SINGLE QUOTATION MARK'),
    'c1': crange('\x80', '\x9f'),
    'bad': names('BROKEN BAR', 'CURRENCY SIGN', 'DIAERESIS', 'NOT SIGN', 'MACRON', 'CEDILLA',
                 'LATIN SMALL LETTER F WITH HOOK', 'MODIFIER LETTER CIRCUMFLEX ACCENT', 'CARON',
                 'BREVE', 'OGONEK', 'SMALL TILDE', 'DAGGER', 'DOUBLE DAGGER', 'PER MILLE SIGN',
                 'REVERSED NOT SIGN', 'LOZENGE') + '\ufffd' +
           names('FEMININE ORDINAL INDICATOR', 'MASCULINE ORDINAL INDICATOR'),
    'law': names('PILCROW SIGN', 'SECTION SIGN'),
    'currency': names('CENT SIGN', 'POUND SIGN', 'YEN SIGN', 'PESETA SIGN', 'EURO SIGN'),
    'start_punctuation': names(
        'INVERTED EXCLAMATION MARK', 'LEFT-POINTING DOUBLE ANGLE QUOTATION MARK',
        'INVERTED QUESTION MARK', 'COPYRIGHT SIGN', 'GREEK TONOS', 'GREEK DIALYTIKA TONOS',
        'LEFT SINGLE QUOTATION MARK', 'SINGLE LOW-9 QUOTATION MARK', 'LEFT DOUBLE QUOTATION MARK',
        'DOUBLE LOW-9 QUOTATION MARK', 'BULLET', 'SINGLE LEFT-POINTING ANGLE QUOTATION MARK') +
        '\uf8ff',
    'end_punctuation': names(
        'REGISTERED SIGN', 'RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK', 'DOUBLE ACUTE ACCENT',
        'RIGHT DOUBLE QUOTATION MARK', 'SINGLE RIGHT-POINTING ANGLE QUOTATION MARK',
        'TRADE MARK SIGN'),
    'numeric': names(
        'SUPERSCRIPT TWO', 'SUPERSCRIPT THREE', 'SUPERSCRIPT ONE', 'PLUS-MINUS SIGN',
        'VULGAR FRACTION ONE QUARTER', 'VULGAR FRACTION ONE HALF', 'VULGAR FRACTION THREE QUARTERS',
        'MULTIPLICATION SIGN', 'MICRO SIGN', 'DIVISION SIGN', 'FRACTION SLASH',
        'PARTIAL DIFFERENTIAL', 'INCREMENT', 'N-ARY PRODUCT', 'N-ARY SUMMATION', 'SQUARE ROOT',
        'INFINITY', 'INTERSECTION', 'INTEGRAL', 'ALMOST EQUAL TO', 'NOT EQUAL TO', 'IDENTICAL TO',
        'LESS-THAN OR EQUAL TO', 'GREATER-THAN OR EQUAL TO', 'NUMERO SIGN'),
    'kaomoji': crange('Ò', 'Ö') + crange('Ù', 'Ü') + crange('ò', 'ö') + crange('ø', 'ü') +
               cap('O WITH DOUBLE ACUTE', 'O WITH MACRON', 'U WITH MACRON', 'U WITH OGONEK') +
               N('DEGREE SIGN'),
    'upper_accented': crange('\xc0', '\xd1') +
        cap('O WITH STROKE', 'U WITH DIAERESIS', 'Y WITH ACUTE', 'A WITH BREVE', 'A WITH MACRON',
            'A WITH OGONEK', 'C WITH ACUTE', 'C WITH CARON', 'D WITH CARON', 'D WITH STROKE',
            'E WITH OGONEK', 'E WITH CARON', 'E WITH MACRON', 'E WITH DOT ABOVE', 'G WITH BREVE',
            'G WITH CEDILLA', 'I WITH DOT ABOVE', 'I WITH MACRON', 'K WITH CEDILLA',
            'L WITH ACUTE', 'L WITH CARON', 'L WITH STROKE', 'L WITH CEDILLA', 'N WITH ACUTE',
            'N WITH CARON', 'N WITH CEDILLA') +
        N('LATIN CAPITAL LIGATURE OE') +
        cap('R WITH CARON', 'S WITH ACUTE', 'S WITH CEDILLA', 'S WITH CARON', 'T WITH CEDILLA',
            'T WITH CARON', 'U WITH RING ABOVE', 'U WITH DOUBLE ACUTE', 'Y WITH DIAERESIS',
            'Z WITH ACUTE', 'Z WITH DOT ABOVE', 'Z WITH CARON') +
        N('CYRILLIC CAPITAL LETTER GHE WITH UPTURN'),
    'lower_accented': small('SHARP S') + crange('\xe0', '\xf1') +
        small('A WITH BREVE', 'A WITH OGONEK', 'A WITH MACRON', 'C WITH ACUTE', 'C WITH CARON',
              'D WITH CARON', 'D WITH STROKE', 'E WITH OGONEK', 'E WITH CARON', 'E WITH MACRON',
              'E WITH DOT ABOVE', 'G WITH BREVE', 'G WITH CEDILLA', 'I WITH OGONEK',
              'I WITH MACRON', 'K WITH CEDILLA', 'L WITH ACUTE', 'L WITH CARON', 'L WITH STROKE',
              'L WITH CEDILLA') +
        N('LATIN SMALL LIGATURE OE') +
        small('R WITH ACUTE', 'S WITH ACUTE', 'S WITH CEDILLA', 'S WITH CARON', 'T WITH CARON',
              'U WITH DIAERESIS', 'Z WITH ACUTE', 'Z WITH DOT ABOVE', 'Z WITH CARON') +
        names('CYRILLIC SMALL LETTER GHE WITH UPTURN', 'LATIN SMALL LIGATURE FI',
              'LATIN SMALL LIGATURE FL'),
    'upper_common': N('LATIN CAPITAL LETTER THORN') +
        crange(N('GREEK CAPITAL LETTER ALPHA'), N('GREEK CAPITAL LETTER OMEGA')) +
        names(*('GREEK CAPITAL LETTER ' + n for n in (
            'ALPHA WITH TONOS', 'EPSILON WITH TONOS', 'ETA WITH TONOS', 'IOTA WITH TONOS',
            'OMICRON WITH TONOS', 'UPSILON WITH TONOS', 'OMEGA WITH TONOS',
            'IOTA WITH DIALYTIKA', 'UPSILON WITH DIALYTIKA'))) +
        crange(N('CYRILLIC CAPITAL LETTER IO'), N('CYRILLIC CAPITAL LETTER YA')),
    'lower_common':
        crange(N('GREEK SMALL LETTER ALPHA'), N('GREEK SMALL LETTER OMEGA')) +
        names(*('GREEK SMALL LETTER ' + n for n in (
            'ALPHA WITH TONOS', 'EPSILON WITH TONOS', 'ETA WITH TONOS', 'IOTA WITH TONOS',
            'UPSILON WITH DIALYTIKA AND TONOS'))) +
        crange(N('CYRILLIC SMALL LETTER A'), N('CYRILLIC SMALL LETTER DZHE')),
    'box': '│┌┐┘├┤┬┼' +
        crange(N('BOX DRAWINGS DOUBLE HORIZONTAL'), N('BOX DRAWINGS DOUBLE VERTICAL AND HORIZONTAL')) +
        '▀▄█▌▐░▒▓',
}

# ---- ftfy/chardata.py (6.3.1): UTF8_CLUES --------------------------------------------------------
# ftfy lists these by hand; each one is "the characters that bytes X..Y decode to in one of
# latin-1, windows-1252/1251/1250/1253/1254/1257" (its scripts/char_data_table.py annotates every
# entry with such an encoding:byte). They are computed that way here and checked against ftfy's lists.
SAFE_ENCODINGS = ['latin-1', 'cp1252', 'cp1251', 'cp1250', 'cp1253', 'cp1254', 'cp1257']


def decoded(byte_values):
    out = set()
    for enc in SAFE_ENCODINGS:
        for b in byte_values:
            try:
                out.add(bytes([b]).decode(enc))
            except UnicodeDecodeError:
                pass
    return out


GREEK_CAP = ['BETA', 'GAMMA', 'DELTA', 'EPSILON', 'ZETA', 'ETA', 'THETA', 'IOTA', 'KAPPA', 'LAMDA',
             'MU', 'NU', 'XI', 'OMICRON', 'PI', 'RHO', 'SIGMA', 'TAU', 'UPSILON', 'PHI', 'CHI', 'PSI',
             'OMEGA']
CYR_CAP = ['VE', 'GHE', 'DE', 'IE', 'ZHE', 'ZE', 'I', 'SHORT I', 'KA', 'EL', 'EM', 'EN', 'O', 'PE',
           'ER', 'ES', 'TE', 'U', 'EF', 'HA', 'TSE', 'CHE', 'SHA', 'SHCHA', 'HARD SIGN', 'YERU',
           'SOFT SIGN', 'E', 'YU', 'YA']
FTFY_FIRST_OF_2 = set(
    cap('A WITH BREVE', 'A WITH CIRCUMFLEX', 'A WITH DIAERESIS', 'A WITH MACRON', 'A WITH RING ABOVE',
        'A WITH TILDE', 'AE', 'C WITH ACUTE', 'C WITH CARON', 'C WITH CEDILLA', 'D WITH CARON',
        'D WITH STROKE', 'E WITH ACUTE', 'E WITH CARON', 'E WITH CIRCUMFLEX', 'E WITH DIAERESIS',
        'E WITH DOT ABOVE', 'E WITH GRAVE', 'E WITH MACRON', 'E WITH OGONEK', 'ETH',
        'G WITH BREVE', 'G WITH CEDILLA', 'I WITH ACUTE', 'I WITH CIRCUMFLEX', 'I WITH DIAERESIS',
        'I WITH DOT ABOVE', 'I WITH GRAVE', 'I WITH MACRON', 'K WITH CEDILLA', 'L WITH ACUTE',
        'L WITH CEDILLA', 'L WITH STROKE', 'N WITH ACUTE', 'N WITH CARON', 'N WITH CEDILLA',
        'N WITH TILDE', 'O WITH ACUTE', 'O WITH CIRCUMFLEX', 'O WITH DIAERESIS',
        'O WITH DOUBLE ACUTE', 'O WITH GRAVE', 'O WITH MACRON', 'O WITH STROKE', 'O WITH TILDE',
        'R WITH CARON', 'S WITH ACUTE', 'S WITH CARON', 'S WITH CEDILLA', 'T WITH CEDILLA', 'THORN',
        'U WITH ACUTE', 'U WITH CIRCUMFLEX', 'U WITH DIAERESIS', 'U WITH DOUBLE ACUTE',
        'U WITH GRAVE', 'U WITH MACRON', 'U WITH OGONEK', 'U WITH RING ABOVE', 'Y WITH ACUTE',
        'Z WITH ACUTE', 'Z WITH CARON', 'Z WITH DOT ABOVE') +
    names('LATIN SMALL LETTER SHARP S', 'MULTIPLICATION SIGN') +
    names(*('GREEK CAPITAL LETTER ' + n for n in GREEK_CAP)) +
    names('GREEK CAPITAL LETTER IOTA WITH DIALYTIKA', 'GREEK CAPITAL LETTER UPSILON WITH DIALYTIKA',
          'GREEK SMALL LETTER ALPHA WITH TONOS', 'GREEK SMALL LETTER EPSILON WITH TONOS',
          'GREEK SMALL LETTER ETA WITH TONOS', 'GREEK SMALL LETTER IOTA WITH TONOS') +
    names(*('CYRILLIC CAPITAL LETTER ' + n for n in CYR_CAP)))
FTFY_FIRST_OF_3 = set(
    small('A WITH ACUTE', 'A WITH BREVE', 'A WITH CIRCUMFLEX', 'A WITH DIAERESIS', 'A WITH GRAVE',
          'A WITH MACRON', 'A WITH OGONEK', 'A WITH RING ABOVE', 'A WITH TILDE', 'AE',
          'C WITH ACUTE', 'C WITH CARON', 'C WITH CEDILLA', 'D WITH CARON', 'E WITH ACUTE',
          'E WITH CARON', 'E WITH CIRCUMFLEX', 'E WITH DIAERESIS', 'E WITH DOT ABOVE',
          'E WITH GRAVE', 'E WITH MACRON', 'E WITH OGONEK', 'G WITH CEDILLA', 'I WITH ACUTE',
          'I WITH CIRCUMFLEX', 'I WITH DIAERESIS', 'I WITH GRAVE', 'I WITH MACRON',
          'I WITH OGONEK', 'K WITH CEDILLA', 'L WITH ACUTE', 'L WITH CEDILLA', 'R WITH ACUTE',
          'Z WITH ACUTE') +
    N('GREEK SMALL LETTER UPSILON WITH DIALYTIKA AND TONOS') +
    names(*('GREEK SMALL LETTER ' + n for n in [
        'ALPHA', 'BETA', 'GAMMA', 'DELTA', 'EPSILON', 'ZETA', 'ETA', 'THETA', 'IOTA', 'KAPPA',
        'LAMDA', 'MU', 'NU', 'XI', 'OMICRON'])) +
    names(*('CYRILLIC SMALL LETTER ' + n for n in [
        'A', 'BE', 'VE', 'GHE', 'DE', 'IE', 'ZHE', 'ZE', 'I', 'SHORT I', 'KA', 'EL', 'EM', 'EN', 'O',
        'PE'])))
FTFY_FIRST_OF_4 = set(names(
    'LATIN SMALL LETTER D WITH STROKE', 'LATIN SMALL LETTER ETH', 'LATIN SMALL LETTER G WITH BREVE',
    'LATIN SMALL LETTER O WITH ACUTE', 'LATIN SMALL LETTER S WITH CARON', 'GREEK SMALL LETTER PI',
    'GREEK SMALL LETTER SIGMA', 'CYRILLIC SMALL LETTER ER', 'CYRILLIC SMALL LETTER U'))
CYR_CONT = ['IO', 'DJE', 'GJE', 'UKRAINIAN IE', 'DZE', 'BYELORUSSIAN-UKRAINIAN I', 'YI', 'JE', 'LJE',
            'NJE', 'TSHE', 'KJE', 'SHORT U', 'DZHE']
FTFY_CONTINUATION_STRICT = set(
    crange('\x80', '\xbf') +
    cap('A WITH OGONEK', 'AE', 'L WITH CARON', 'L WITH STROKE', 'O WITH STROKE', 'R WITH CEDILLA',
        'S WITH ACUTE', 'S WITH CARON', 'S WITH CEDILLA', 'T WITH CARON', 'Y WITH DIAERESIS',
        'Z WITH ACUTE', 'Z WITH CARON', 'Z WITH DOT ABOVE') +
    N('LATIN CAPITAL LIGATURE OE') +
    small('A WITH OGONEK', 'AE', 'F WITH HOOK', 'L WITH CARON', 'L WITH STROKE', 'O WITH STROKE',
          'R WITH CEDILLA', 'S WITH ACUTE', 'S WITH CARON', 'S WITH CEDILLA', 'T WITH CARON',
          'Z WITH ACUTE', 'Z WITH CARON', 'Z WITH DOT ABOVE') +
    names('LATIN SMALL LIGATURE OE', 'MODIFIER LETTER CIRCUMFLEX ACCENT', 'CARON', 'BREVE', 'OGONEK',
          'SMALL TILDE', 'DOUBLE ACUTE ACCENT', 'GREEK TONOS', 'GREEK DIALYTIKA TONOS') +
    names(*('GREEK CAPITAL LETTER ' + n + ' WITH TONOS' for n in (
        'ALPHA', 'EPSILON', 'ETA', 'IOTA', 'OMICRON', 'UPSILON', 'OMEGA'))) +
    names(*('CYRILLIC CAPITAL LETTER ' + n for n in CYR_CONT)) +
    names(*('CYRILLIC SMALL LETTER ' + n for n in CYR_CONT)) +
    names('CYRILLIC CAPITAL LETTER GHE WITH UPTURN', 'CYRILLIC SMALL LETTER GHE WITH UPTURN',
          'DAGGER', 'DOUBLE DAGGER', 'PER MILLE SIGN', 'SINGLE LEFT-POINTING ANGLE QUOTATION MARK',
          'SINGLE RIGHT-POINTING ANGLE QUOTATION MARK', 'EURO SIGN', 'NUMERO SIGN',
          'TRADE MARK SIGN'))
# utf8_continuation = utf8_continuation_strict + a space (standing for U+A0) + the punctuation that
# often stands for itself next to mojibake.
CONT_NOT_STRICT = ' ' + names('EN DASH', 'EM DASH', 'HORIZONTAL BAR', 'LEFT SINGLE QUOTATION MARK',
                              'RIGHT SINGLE QUOTATION MARK', 'SINGLE LOW-9 QUOTATION MARK',
                              'LEFT DOUBLE QUOTATION MARK', 'RIGHT DOUBLE QUOTATION MARK',
                              'DOUBLE LOW-9 QUOTATION MARK', 'BULLET', 'HORIZONTAL ELLIPSIS')


def utf8_clues():
    first2, first3 = decoded(range(0xC2, 0xE0)), decoded(range(0xE0, 0xF0))
    first4 = decoded([0xF0, 0xF3])
    cont = decoded(range(0x80, 0xC0)) | set(crange('\x80', '\xbf')) | {' '}
    strict = cont - set(CONT_NOT_STRICT)
    for name, got, want in [('utf8_first_of_2', first2, FTFY_FIRST_OF_2),
                            ('utf8_first_of_3', first3, FTFY_FIRST_OF_3),
                            ('utf8_first_of_4', first4, FTFY_FIRST_OF_4),
                            ('utf8_continuation_strict', strict, FTFY_CONTINUATION_STRICT)]:
        if got != want:
            sys.exit('%s differs from ftfy: extra %r, missing %r' % (name, sorted(got - want),
                                                                   sorted(want - got)))
    return {'utf8_first_of_2': first2, 'utf8_first_of_3': first3, 'utf8_first_of_4': first4,
            'utf8_continuation': cont, 'utf8_continuation_strict': strict}


# Bit order of the classes in the C table (text_fix_impl.h defines the same names).
CLASS_BITS = ['common', 'bad', 'law', 'currency', 'start_punctuation', 'end_punctuation', 'numeric',
              'kaomoji', 'upper_accented', 'lower_accented', 'upper_common', 'lower_common', 'box',
              'utf8_first_of_2', 'utf8_first_of_3', 'utf8_first_of_4', 'utf8_continuation',
              'utf8_continuation_strict']


# ---- output helpers ----------------------------------------------------------------------------------
# c_string (a C literal of the UTF-8 bytes) and ranges (the code point ranges where pred holds) are
# the tokenizer generator's.
def rows(items, per_line):
    for i in range(0, len(items), per_line):
        yield '  ' + ', '.join(items[i:i + per_line]) + ','


def main():
    if sys.version_info[:2] != (3, 11):
        print('warning: tables were defined against Python 3.11 (Unicode 14.0)', file=sys.stderr)
    L = [
        '/* text_fix_tables.h: the data tables of text/text_fix*.c (ftfy 6.3.1\'s fix_text), built from',
        ' * Python %s (Unicode %s) and ftfy\'s character classes.'
        % ('.'.join(map(str, sys.version_info[:3])), unicodedata.unidata_version),
        ' * GENERATED by text/gen_text_fix_tables.py; do not edit. Included only by text/text_fix*.c. */',
        '#ifndef TACA_TEXT_TEXT_FIX_TABLES_H',
        '#define TACA_TEXT_TEXT_FIX_TABLES_H',
        '',
        '#include <stdint.h>',
        '',
    ]

    # HTML entities (ftfy/chardata.py HTML_ENTITIES, reachable through HTML_ENTITY_RE).
    name_re = re.compile(r'[0-9A-Za-z]{1,24}')
    ents = {}
    for name, char in html.entities.html5.items():
        if not name.endswith(';'):
            continue
        ents[name[:-1]] = char
        if name == name.lower():
            upper = name.upper()
            if html.unescape('&' + upper) == '&' + upper:
                ents[upper[:-1]] = char.upper()
    ents = {k: v for k, v in ents.items() if name_re.fullmatch(k)}
    L += ['/* ftfy/chardata.py HTML_ENTITIES: "&NAME;" -> value, for the names HTML_ENTITY_RE',
          ' * (&#?[0-9A-Za-z]{1,24};) can match: html.entities.html5 names that end in ";", and the',
          ' * all-caps form of lowercase names where html.unescape leaves it alone (value upper-cased).',
          ' * NAME without "&" and ";", sorted by strcmp. */',
          'typedef struct {', '  const char *name;', '  const char *value;', '} tf_entity;', '',
          'static const tf_entity TF_ENTITIES[] = {']
    for k in sorted(ents, key=lambda s: s.encode()):
        L.append('  {%s, %s},' % (c_string(k), c_string(ents[k])))
    L += ['};', '']

    # WIDTH_MAP
    width = {0x3000: ' '}
    for i in range(0xFF01, 0xFFF0):
        alt = unicodedata.normalize('NFKC', chr(i))
        if alt != chr(i):
            width[i] = alt
    assert max(len(v) for v in width.values()) <= 2
    L += ['/* ftfy/chardata.py WIDTH_MAP: U+3000 -> " ", and NFKC of each of U+FF01..U+FFEF where it',
          ' * differs (at most 2 code points; to[1] == 0 for one), sorted by code point. */',
          'typedef struct {', '  uint32_t cp, to[2];', '} tf_width;',
          'static const tf_width TF_WIDTH_MAP[] = {']
    L += rows(['{0x%X, {0x%X, 0x%X}}' % (k, ord(v[0]), ord(v[1]) if len(v) > 1 else 0)
               for k, v in sorted(width.items())], 4)
    L += ['};', '']

    # Charmaps
    L += ['/* ftfy/chardata.py CHARMAP_ENCODINGS, in ftfy\'s order: each byte\'s character. The "sloppy"',
          ' * codecs (ftfy/bad_codecs/sloppy.py) decode the bytes Windows leaves undefined as Latin-1',
          ' * and byte 1A as U+FFFD. Bytes 00..7F other than 1A decode to themselves in all of them. */',
          '#define TF_NUM_CHARMAPS %d' % len(CHARMAP_ENCODINGS)]
    L.append('enum { ' + ', '.join('TF_CM_' + re.sub(r'[^A-Z0-9]', '_', e[0].upper())
                                   for e in CHARMAP_ENCODINGS) + ' };')
    L.append('static const char *const TF_CHARMAP_NAMES[TF_NUM_CHARMAPS] = {%s};'
             % ', '.join(c_string(e[0]) for e in CHARMAP_ENCODINGS))
    L.append('static const int TF_CHARMAP_SLOPPY[TF_NUM_CHARMAPS] = {%s};'
             % ', '.join(str(int(e[2])) for e in CHARMAP_ENCODINGS))
    tables = []
    L.append('static const uint16_t TF_CHARMAP_DECODE[TF_NUM_CHARMAPS][256] = {')
    for _, codec, sloppy in CHARMAP_ENCODINGS:
        t = decoding_table(codec, sloppy)
        assert len(t) == 256 and all(ord(c) < 0x10000 for c in t)
        assert all(t[i] == chr(i) for i in range(0x80) if i != 0x1A)
        assert len(set(t)) == 256, codec
        tables.append(t)
        L.append('  {')
        L += ['  ' + r for r in rows(['0x%04X' % ord(c) for c in t], 12)]
        L.append('  },')
    L += ['};', '',
          '/* The inverse for bytes 1A and 80..FF: (code point, byte) sorted by code point. */',
          'typedef struct {', '  uint16_t cp;', '  uint8_t byte;', '} tf_charmap_rev;',
          'static const tf_charmap_rev TF_CHARMAP_ENCODE[TF_NUM_CHARMAPS][129] = {']
    for t in tables:
        pairs = sorted((ord(t[b]), b) for b in [0x1A] + list(range(0x80, 0x100)))
        L.append('  {')
        L += ['  ' + r for r in rows(['{0x%04X, 0x%02X}' % p for p in pairs], 8)]
        L.append('  },')
    L += ['};', '']

    # Character classes
    classes = dict(CATEGORIES)
    del classes['c1']  # tested as a range in C
    for k, v in utf8_clues().items():
        classes[k] = v
    masks = {}
    for bit, name in enumerate(CLASS_BITS):
        for c in classes[name]:
            masks[ord(c)] = masks.get(ord(c), 0) | (1 << bit)
    assert set(classes) == set(CLASS_BITS)
    L += ['/* Character classes, one bit each in this order (the TF_C_* bits below):',
          ' *   ftfy/badness.py MOJIBAKE_CATEGORIES: ' + ' '.join(CLASS_BITS[:13]) + ' (c1 = U+80..9F',
          ' *   is tested as a range); ftfy/chardata.py UTF8_CLUES: ' + ' '.join(CLASS_BITS[13:]) + '.',
          ' * Sorted by code point. */',
          '#define TF_C_%s (1u << %d)' % (CLASS_BITS[0].upper(), 0)] + [
          '#define TF_C_%s (1u << %d)' % (c.upper(), b) for b, c in enumerate(CLASS_BITS) if b] + [
          'typedef struct {', '  uint32_t cp, mask;', '} tf_char_class_entry;',
          'static const tf_char_class_entry TF_CHAR_CLASSES[] = {']
    L += rows(['{0x%X, 0x%X}' % (k, masks[k]) for k in sorted(masks)], 6)
    L += ['};', '', '#endif']

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'text_fix_tables.h')
    with open(path, 'w', encoding='ascii') as f:
        f.write('\n'.join(L) + '\n')
    print('wrote %s: %d entities, %d width entries, %d classed characters'
          % (path, len(ents), len(width), len(masks)), file=sys.stderr)


if __name__ == '__main__':
    main()

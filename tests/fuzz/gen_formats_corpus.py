"""gen_formats_corpus.py: writes the seed corpora of fuzz_tar (tests/fuzz/corpus/tar/: WebDataset
shards, well-formed and broken), fuzz_image (corpus/image/: small JPEG, PNG and WebP files of every
kind the decoder handles, and broken ones) and fuzz_clip_config (corpus/clip_config/: open_clip and
HuggingFace model configs, valid and invalid). Small files, so that fuzzing starts fast. Needs Debian's
python3-pil:
    /usr/bin/python3 tests/fuzz/gen_formats_corpus.py
"""
import gzip
import io
import json
import os
import shutil
import struct
import tarfile
import zlib

from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
corpus = os.path.join(here, 'corpus')


def reset(name):
    d = os.path.join(corpus, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def write(d, name, data):
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def pattern(w, h, mode='RGB'):
    im = Image.new('RGB', (w, h))
    im.putdata([((x * 37 + y * 11) % 256, (x * 5 + y * 53) % 256, (x * y * 7) % 256)
                for y in range(h) for x in range(w)])
    return im.convert(mode) if mode != 'RGB' else im


def encode(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


# ---------- images ----------
img = reset('image')
jpeg = encode(pattern(16, 12), 'JPEG', quality=90)
png = encode(pattern(9, 7), 'PNG')
webp = encode(pattern(12, 10), 'WEBP', quality=80)
write(img, 'jpeg_rgb', jpeg)
write(img, 'jpeg_progressive', encode(pattern(17, 9), 'JPEG', quality=85, progressive=True))
write(img, 'jpeg_gray', encode(pattern(8, 8, 'L'), 'JPEG'))
write(img, 'jpeg_cmyk', encode(pattern(8, 6, 'CMYK'), 'JPEG'))
write(img, 'jpeg_420', encode(pattern(15, 11), 'JPEG', subsampling=2))
write(img, 'png_rgb', png)
write(img, 'png_rgba', encode(pattern(6, 5, 'RGBA'), 'PNG'))
write(img, 'png_gray', encode(pattern(7, 3, 'L'), 'PNG'))
write(img, 'png_gray_alpha', encode(pattern(4, 4, 'LA'), 'PNG'))
write(img, 'png_palette', encode(pattern(10, 6).convert('P', palette=Image.ADAPTIVE, colors=16), 'PNG'))
write(img, 'png_bilevel', encode(pattern(13, 5, '1'), 'PNG'))
write(img, 'png_gray16', encode(pattern(5, 4, 'L').convert('I;16'), 'PNG'))
# PIL cannot write Adam7-interlaced PNG: take the decoder fixtures' (made by tests/fixtures/gen_images.py)
for name in ('interlaced_77x41.png', 'thin_1x40.png', 'wide_97x2.png', 'palette4_90x70.png'):
    shutil.copy(os.path.join(here, '..', 'fixtures', 'images', name), os.path.join(img, 'png_' + name[:-4]))
write(img, 'webp_lossy', webp)
write(img, 'webp_lossless', encode(pattern(6, 6, 'RGBA'), 'WEBP', lossless=True))
write(img, 'webp_alpha', encode(pattern(8, 5, 'RGBA'), 'WEBP', quality=70))
# broken: truncated, bad checksum, huge declared size, wrong magic
write(img, 'bad_jpeg_truncated', jpeg[:len(jpeg) // 2])
write(img, 'bad_png_truncated', png[:len(png) - 20])
write(img, 'bad_webp_truncated', webp[:len(webp) // 2])
bad_crc = bytearray(png)
bad_crc[-20] ^= 0xFF
write(img, 'bad_png_crc', bytes(bad_crc))
ihdr = struct.pack('>IIBBBBB', 30000, 30000, 8, 2, 0, 0, 0)
bomb = (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + b'IHDR' + ihdr +
        struct.pack('>I', zlib.crc32(b'IHDR' + ihdr)))
write(img, 'bad_png_bomb', bomb)
sof = jpeg.find(b'\xff\xc0')
jbomb = bytearray(jpeg)
if sof > 0:
    jbomb[sof + 5:sof + 9] = struct.pack('>HH', 65000, 65000)
write(img, 'bad_jpeg_bomb', bytes(jbomb))
write(img, 'bad_magic', b'GIF89a' + bytes(40))
write(img, 'empty', b'')

# ---------- tar shards ----------
tar = reset('tar')


def shard(members, fmt=tarfile.USTAR_FORMAT):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode='w', format=fmt) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
                continue
            info.size = len(data)
            info.mtime = 1700000000
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    raw = b.getvalue()
    # tarfile pads to 10 KiB records: keep the members and the two zero blocks only
    end = len(raw.rstrip(b'\0'))
    end = (end + 511) // 512 * 512
    return raw[:end] + bytes(1024)


tiny_png = encode(pattern(2, 2), 'PNG')
tiny_jpg = encode(pattern(3, 2), 'JPEG')
good = [('000000.png', tiny_png), ('000000.txt', b'a red circle'), ('000000.cls', b'3'),
        ('000001.jpg', tiny_jpg), ('000001.txt', b'a blue square')]
write(tar, 'shard_good', shard(good))
write(tar, 'shard_problems', shard([
    ('a.png', tiny_png),                              # no caption
    ('b.txt', b'caption without image'),              # no image
    ('c.png', tiny_png), ('c.txt', b''),              # empty caption
    ('d.png', tiny_png), ('d.txt', b'x'), ('d.cls', b'-1'),   # bad label
    ('e.webp', b'not really webp'), ('e.txt', b'y'),  # image bytes are the decoder's business
    ('dir', None),
    ('f.PNG', tiny_png), ('f.txt', b'upper-case extension'),
]))
write(tar, 'shard_keys_interleaved', shard([
    ('k1.txt', b'one'), ('k2.png', tiny_png), ('k1.png', tiny_png), ('k2.txt', b'two'),
    ('sub/dir/k3.jpg', tiny_jpg), ('sub/dir/k3.txt', b'three'), ('k.4.multi.dot.png', tiny_png),
    ('k.4.multi.dot.txt', b'dots')]))
write(tar, 'shard_pax_longname', shard([('x' * 150 + '.png', tiny_png), ('x' * 150 + '.txt', b'long')],
                                       fmt=tarfile.PAX_FORMAT))
write(tar, 'shard_gnu', shard([('g.png', tiny_png), ('g.txt', b'gnu')], fmt=tarfile.GNU_FORMAT))
write(tar, 'shard_gzip', gzip.compress(shard(good[:3]), mtime=0))
full = shard(good)
write(tar, 'bad_truncated_member', full[:512 + 40])
write(tar, 'bad_truncated_header', full[:300])
hdr = bytearray(full[:512])
hdr[124:136] = b'77777777777\0'  # member size far past the end
write(tar, 'bad_size', bytes(hdr) + full[512:1024])
write(tar, 'empty_archive', bytes(1024))
write(tar, 'empty', b'')

# ---------- JSON model configs ----------
cfg = reset('clip_config')
fixtures = os.path.join(here, '..', 'fixtures', 'clip')
shutil.copy(os.path.join(fixtures, 'hf_gelu_f16', 'config.json'), os.path.join(cfg, 'hf_fixture'))
shutil.copy(os.path.join(fixtures, 'oc_gelu_bf16', 'open_clip_config.json'), os.path.join(cfg, 'oc_fixture'))
oc = {"embed_dim": 32, "quick_gelu": True,
      "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
hf = {"projection_dim": 16,
      "vision_config": {"hidden_size": 40, "intermediate_size": 100, "num_hidden_layers": 2,
                        "num_attention_heads": 5, "image_size": 40, "patch_size": 8, "hidden_act": "gelu"},
      "text_config": {"hidden_size": 8, "intermediate_size": 32, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "max_position_embeddings": 77, "vocab_size": 49408,
                      "hidden_act": "quick_gelu"}}
dumps = lambda o: json.dumps(o, separators=(',', ':')).encode()
write(cfg, 'oc_demo', dumps(oc))
write(cfg, 'oc_vision_only', dumps({"embed_dim": 8, "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 16,
                                                                   "layers": 1, "head_width": 8, "mlp_ratio": 2.5}}))
write(cfg, 'hf_small', dumps(hf))
write(cfg, 'hf_defaults', dumps({"vision_config": {}}))
write(cfg, 'bad_heads', dumps({**hf, "vision_config": {**hf["vision_config"], "num_attention_heads": 3}}))
write(cfg, 'bad_patch', dumps({**oc, "vision_cfg": {**oc["vision_cfg"], "patch_size": 5}}))
write(cfg, 'bad_types', b'{"embed_dim":"32","vision_cfg":{"width":64.5,"layers":-1},"quick_gelu":1}')
write(cfg, 'bad_huge', dumps({**oc, "vision_cfg": {**oc["vision_cfg"], "width": 16777216, "layers": 16777216,
                                                  "head_width": 1}}))
write(cfg, 'bad_dup_keys', b'{"embed_dim":32,"embed_dim":64,"vision_cfg":{}}')
write(cfg, 'bad_act', dumps({**hf, "text_config": {**hf["text_config"], "hidden_act": "relu"}}))
write(cfg, 'bad_not_object', b'[1,2,3]')
write(cfg, 'bad_syntax', b'{"vision_cfg": {"width": 64,}')
write(cfg, 'bad_utf8', b'{"vision_config":{"hidden_act":"gel\xff"}}')
print('wrote', *(f'{n}: {len(os.listdir(os.path.join(corpus, n)))} files' for n in ('image', 'tar', 'clip_config')))

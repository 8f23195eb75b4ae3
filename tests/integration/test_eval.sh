#!/usr/bin/env bash
# Integration test of `taca eval` on a small store (synthetic shapes, the 40-px fixture CLIP as the
# old model), with TaCA checkpoints made by taca-train against a real taca-featured:
#  1. every figure against an independent NumPy/PyTorch recomputation: the split (the documented
#     hash), the old embeddings (= `taca query export` rows), retrieval R@k and ranks of old, adapted
#     and unadapted features, distances, and the old head (the same objective minimised by
#     torch.optim.LBFGS: same optimum, same accuracies);
#  2. known answers: the new model equal to the old one reproduces the stored F16 embeddings (cosine
#     1, distance within F16 rounding); at step 0 the adapters are zero, so the adapted features are
#     exactly the projector applied to the new model's features;
#  3. a new model of another width (8-d): unadapted figures are reported as not applicable, the
#     adapted ones (projector 8 -> 16) are computed; a LoRA checkpoint at step 0 is the projector too;
#     a store with unlabelled samples and missing text embeddings (featured-mkstore's closed-form
#     store, with exact ties): skipped and labelled counts, split and retrieval against NumPy;
#  4. the JSON has every field, the HTML is well-formed XML with the SVG charts and no external asset,
#     the report is deterministic;
#  5. bad input: one-line errors and non-zero exits.
. "${TACA_SOURCE_DIR:?}/tests/integration/lib/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
srv=""
cleanup() { [ -n "$srv" ] && kill -9 "$srv" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
model=$fix/clip/hf_gelu_f16   # old model; also the "new" model of parts 1-2 (image 40 px, embeddings 16)

# A second new model: the same towers with 8-d projections (random), so its width differs from the old one.
"$py" - "$model" "$tmp/narrow" <<'PY'
import json, os, struct, sys, numpy as np
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
b = open(f'{src}/model.safetensors', 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
dt = {'F16': np.float16, 'F32': np.float32, 'I64': np.int64}
t = {k: np.frombuffer(b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]], dt[v['dtype']]).reshape(v['shape'])
     for k, v in h.items() if k != '__metadata__'}
t = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in t.items()}
names = {np.dtype(np.float32): 'F32', np.dtype(np.int64): 'I64'}
rng = np.random.default_rng(3)
t['visual_projection.weight'] = rng.standard_normal((8, t['visual_projection.weight'].shape[1])).astype(np.float32) * 0.2
t['text_projection.weight'] = rng.standard_normal((8, t['text_projection.weight'].shape[1])).astype(np.float32) * 0.2
hdr, off = {}, 0
for k, v in t.items():
    hdr[k] = {'dtype': names[v.dtype], 'shape': list(v.shape), 'data_offsets': [off, off + v.nbytes]}; off += v.nbytes
hj = json.dumps(hdr).encode(); hj += b' ' * (-len(hj) % 8)
with open(f'{dst}/model.safetensors', 'wb') as f:
    f.write(struct.pack('<Q', len(hj)) + hj + b''.join(v.tobytes() for v in t.values()))
cfg = json.load(open(f'{src}/config.json')); cfg['projection_dim'] = 8
json.dump(cfg, open(f'{dst}/config.json', 'w'))
PY

"$bin/taca" synth --out "$tmp/data" --n 240 --size 40 --shards 2
"$bin/taca" precompute --model "$model" --name old --data "$tmp/data/{00000..00001}.tar" --db "$tmp/db" --quiet
rm -f "$tmp/ports"
"$bin/taca-featured" --db "$tmp/db" --listen 127.0.0.1:0 --port-file "$tmp/ports" > "$tmp/featured.log" 2>&1 &
srv=$!
for _ in $(seq 100); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
port=$(sed -n 's/^grpc=//p' "$tmp/ports")
[ -n "$port" ] || { cat "$tmp/featured.log"; fail "taca-featured did not start"; }
train=(--server "127.0.0.1:$port" --projector-hidden 64 --quiet --threads 1 --batch-size 16 --steps 12 --save-every 12)
"$bin/taca-train" "${train[@]}" --new-model "$model" --out "$tmp/ck" --log-json "$tmp/log.json"
"$bin/taca-train" "${train[@]}" --new-model "$tmp/narrow" --out "$tmp/ck8" --adapter-layers 2-2 --bottleneck 4
"$bin/taca-train" "${train[@]}" --new-model "$model" --out "$tmp/lora" --peft lora --lora-rank 4 --lora-alpha 2 --steps 4 --save-every 4
kill -9 "$srv"; wait "$srv" 2>/dev/null || true; srv=""
"$bin/taca" query --db "$tmp/db" export --model old --modality image --out "$tmp/img.npy"
"$bin/taca" query --db "$tmp/db" export --model old --modality text --out "$tmp/txt.npy"

ev=(--db "$tmp/db" --old old --threads 1 --quiet --split 0.75 --seed 5)
"$bin/taca" eval "${ev[@]}" --new-model "$model" --checkpoint "$tmp/ck/step-000012.safetensors" --log-json "$tmp/log.json" \
  --json "$tmp/e.json" --html "$tmp/e.html" --save-features "$tmp/f" > "$tmp/table.txt"
"$bin/taca" eval "${ev[@]}" --new-model "$model" --checkpoint "$tmp/ck/step-000000.safetensors" --no-new-head \
  --json "$tmp/e0.json" --save-features "$tmp/f0" --batch-size 7 > /dev/null
"$bin/taca" eval "${ev[@]}" --new-model "$tmp/narrow" --checkpoint "$tmp/ck8/step-000012.safetensors" \
  --json "$tmp/e8.json" --save-features "$tmp/f8" > "$tmp/table8.txt"
"$bin/taca" eval "${ev[@]}" --new-model "$model" --checkpoint "$tmp/lora/step-000000.safetensors" --no-new-head \
  --json "$tmp/el0.json" --save-features "$tmp/fl0" > /dev/null
"$bin/taca" eval "${ev[@]}" --new-model "$model" --checkpoint "$tmp/lora/step-000004.safetensors" --no-new-head \
  --json "$tmp/el4.json" > /dev/null
"$bin/featured-mkstore" --db "$tmp/mk" --n 300 --begin 1000 --pixels 40 --dim 16 --quiet
"$bin/taca" eval --db "$tmp/mk" --old old --new-model "$model" --threads 1 --quiet --json "$tmp/mk.json" \
  --save-features "$tmp/fmk" > "$tmp/tablemk.txt"
cat "$tmp/table.txt"

# --- 1-3: figures against NumPy / PyTorch ---
"$py" - "$tmp" "$model" <<'PY' || fail "figures differ from the NumPy/PyTorch recomputation"
import json, math, struct, sys
import numpy as np, torch
t, model = sys.argv[1], sys.argv[2]
M = (1 << 64) - 1
def u(seed, i):
    z = (seed * 0x9E3779B97F4A7C15 + i * 0xD1B54A32D192ED03 + 1) & M
    z ^= z >> 30; z = (z * 0xBF58476D1CE4E5B9) & M; z ^= z >> 27; z = (z * 0x94D049BB133111EB) & M; z ^= z >> 31
    return (z >> 11) * 2.0 ** -53
img, txt = np.load(f'{t}/img.npy'), np.load(f'{t}/txt.npy')
N = img.shape[0]
test_idx = np.array([i for i in range(N) if not u(5, i) < 0.75]); train_idx = np.array([i for i in range(N) if u(5, i) < 0.75])

def ranks(Q, G):  # rank of G[i] for query Q[i]: strictly higher scores + equal scores at lower index
    q = Q.astype(np.float64); g = G.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True); g /= np.linalg.norm(g, axis=1, keepdims=True)
    S = q @ g.T
    r = np.empty(len(S), int)
    for i, s in enumerate(S):
        r[i] = (s > s[i]).sum() + (s[:i] == s[i]).sum()
    return r
def check_ret(js, T, I, what):
    for key, rk in (('t2i', ranks(T, I)), ('i2t', ranks(I, T))):
        d = js[key]
        for k in (1, 5, 10):
            assert d[f'r{k}'] == (rk < k).mean(), (what, key, k, d[f'r{k}'], (rk < k).mean())
        assert abs(d['mean_rank'] - (rk + 1).mean()) < 1e-12 and d['median_rank'] == np.median(rk + 1), (what, key)
def pair(a, b):
    a = a.astype(np.float64); b = b.astype(np.float64)
    return (np.linalg.norm(a - b, axis=1).mean(),
            ((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())
def load_st(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: np.frombuffer(b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]], np.float32).reshape(v['shape'])
            for k, v in h.items() if k != '__metadata__'}

e = json.load(open(f'{t}/e.json')); f = {k: np.load(f'{t}/f/{k}.npy') for k in
    ('test_index', 'test_label', 'test_old_image', 'test_old_text', 'test_new', 'test_adapted', 'train_index', 'train_label',
     'train_old_image', 'train_new')}
# the split: the documented hash
assert list(f['test_index']) == list(test_idx) == e['split']['test_indices'], "split"
assert list(f['train_index']) == list(train_idx) and e['split']['train'] == len(train_idx) and e['split']['test'] == len(test_idx)
assert e['split']['records'] == N == 240 and e['split']['skipped'] == 0
# the old features are the stored ones
assert np.array_equal(f['test_old_image'], img[test_idx]) and np.array_equal(f['test_old_text'], txt[test_idx])
assert np.array_equal(f['train_old_image'], img[train_idx])
# synth labels: shape x colour, 24 classes
assert f['test_label'].min() >= 0 and f['test_label'].max() < 24 and e['split']['test_labelled'] == len(test_idx)
# retrieval
check_ret(e['retrieval']['old'], txt[test_idx], img[test_idx], 'old')
check_ret(e['retrieval']['adapted'], txt[test_idx], f['test_adapted'], 'adapted')
check_ret(e['retrieval']['new'], txt[test_idx], f['test_new'], 'new')
nt = len(test_idx)
assert e['chance'] == {'r1': 1 / nt, 'r5': 5 / nt, 'r10': 10 / nt}
# backward compatibility (BCT): label retrieval within the test split, each sample querying the others
def bc(Q, G, y):
    q = Q.astype(np.float64); g = G.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True); g /= np.linalg.norm(g, axis=1, keepdims=True)
    r1, aps = [], []
    for i in range(len(y)):
        others = np.array([j for j in range(len(y)) if j != i])
        rel = y[others] == y[i]
        if not rel.any(): continue
        order = others[np.lexsort((others, -(g[others] @ q[i])))]  # score descending, index ascending
        hit = y[order] == y[i]
        r1.append(hit[0]); aps.append((np.cumsum(hit)[hit] / (np.nonzero(hit)[0] + 1)).mean())
    return np.mean(r1), np.mean(aps), len(r1)
c = e['compatibility']; y = f['test_label']
for key, Q, G in (('old_old', f['test_old_image'], f['test_old_image']), ('new_old', f['test_adapted'], f['test_old_image']),
                  ('new_new', f['test_new'], f['test_new'])):
    r1, mAP, nq = bc(Q, G, y)
    assert c[key]['queries'] == nq and abs(c[key]['r1'] - r1) < 1e-12 and abs(c[key]['map'] - mAP) < 1e-12, (key, c[key], r1, mAP)
assert abs(c['gain']['value'] - (c['new_old']['r1'] - c['old_old']['r1'])) < 1e-12
up = c['new_new']['r1'] - c['old_old']['r1']
assert (c['update_gain']['applicable'] and abs(c['update_gain']['value'] - c['gain']['value'] / up) < 1e-12) if up > 0 else not c['update_gain']['applicable']
nf = c['negative_flips']
assert nf['labelled'] == len(y) and nf['rate'] == nf['flips'] / nf['labelled']
# flips bound the accuracy the adapted features lose: acc(old) - acc(adapted) <= flip rate
assert e['accuracy']['old_head_old']['value'] - e['accuracy']['old_head_adapted']['value'] <= nf['rate'] + 1e-12
print(f"  compatibility: old/old R@1 {c['old_old']['r1']:.3f}, new->old {c['new_old']['r1']:.3f}, new/new {c['new_new']['r1']:.3f}; flips {nf['flips']}/{nf['labelled']}")
# distances
for key, feats in (('adapted_vs_old', f['test_adapted']), ('new_vs_old', f['test_new'])):
    l2, cs = pair(feats, img[test_idx])
    d = e['distance'][key]
    assert abs(d['mean_l2'] - l2) < 1e-9 * max(1, l2) and abs(d['mean_cosine'] - cs) < 1e-9, (key, d, l2, cs)
# known answer: the new model is the old one, so its features are the stored F16 embeddings before rounding
new, old = f['test_new'], f['test_old_image']
err = np.abs(new - old); bound = np.abs(old) * 2.0 ** -11 + 1e-5 * np.abs(old).max()
assert (err <= bound).all(), f"new vs stored old: worst excess {(err - bound).max()}"
assert e['distance']['new_vs_old']['mean_cosine'] > 0.99999
print(f"  new == old model: max |new - stored F16| {err.max():.3g} (F16 half-ulp bound), cosine {e['distance']['new_vs_old']['mean_cosine']:.7f}")

# the old head: the same objective minimised by torch.optim.LBFGS in float64
head = e['accuracy']['head']; l2 = head['l2']
ytr = f['train_label']; cls = np.unique(ytr[ytr >= 0]); assert head['classes'] == len(cls)
X = img[train_idx][ytr >= 0].astype(np.float64); yi = torch.tensor(np.searchsorted(cls, ytr[ytr >= 0]))
mean = X.mean(0); scale = math.sqrt(((X - mean) ** 2).sum(1).mean())
norm = lambda A: torch.tensor((A.astype(np.float64) - mean) / scale)
Xn = norm(img[train_idx][ytr >= 0])
W = torch.zeros(len(cls), X.shape[1], dtype=torch.float64, requires_grad=True)
b = torch.zeros(len(cls), dtype=torch.float64, requires_grad=True)
opt = torch.optim.LBFGS([W, b], lr=1, max_iter=20000, tolerance_grad=1e-13, tolerance_change=1e-16, history_size=20,
                        line_search_fn='strong_wolfe')
def obj():
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(Xn @ W.T + b, yi) + l2 / 2 * (W ** 2).sum()
    loss.backward()
    return loss
opt.step(obj)
ref = obj().item()
assert abs(head['objective'] - ref) <= 1e-7 * abs(ref), (head['objective'], ref)
def acc(A):
    with torch.no_grad():
        p = cls[(norm(A) @ W.T + b).argmax(1).numpy()]
    return (p == f['test_label']).mean()
a = e['accuracy']
print(f"  old head: objective {head['objective']:.10f} (torch {ref:.10f}); test accuracy old {a['old_head_old']['value']:.4f}"
      f" (torch {acc(old):.4f}), adapted {a['old_head_adapted']['value']:.4f} (torch {acc(f['test_adapted']):.4f})")
one = 1 / nt + 1e-12  # a test point within ~1e-7 of a decision boundary could flip: allow one sample
assert abs(a['old_head_old']['value'] - acc(old)) <= one
assert abs(a['old_head_adapted']['value'] - acc(f['test_adapted'])) <= one
assert abs(a['old_head_new']['value'] - acc(new)) <= one
assert a['new_head_new']['applicable'] and 0 <= a['new_head_new']['value'] <= 1
hp = e['hot_plug']
assert hp['gain'] == a['old_head_adapted']['value'] - a['old_head_old']['value']
assert hp['holds'] == (hp['upgrade_beats_old'] and hp['within_upper_bound'])

# step 0: the adapters' up-projections are zero, so adapted = projector(new features), exactly
e0 = json.load(open(f'{t}/e0.json')); f0 = {k: np.load(f'{t}/f0/{k}.npy') for k in ('test_new', 'test_adapted')}
P = load_st(f'{t}/ck/step-000000.safetensors')
assert all(not P[k].any() for k in P if k.startswith('adapter.') and '.up.' in k)
x = f0['test_new'].astype(np.float64)
hid = x @ P['projector.fc1.weight'].T.astype(np.float64) + P['projector.fc1.bias']
hid = hid * 0.5 * (1 + np.vectorize(math.erf)(hid / math.sqrt(2)))
proj = hid @ P['projector.fc2.weight'].T.astype(np.float64) + P['projector.fc2.bias']
rel = np.abs(f0['test_adapted'] - proj).max() / np.abs(proj).max()
print(f"  step 0: adapted vs NumPy projector(new): max rel. error {rel:.2g}")
assert rel < 1e-5
# batch 7 vs 32: the same features up to GEMM blocking (OpenBLAS picks kernels by the batch's row
# count, so bits may differ; bit-identity holds for the same batch rows, see test_export.sh)
rel_b = np.abs(f0['test_new'] - f['test_new']).max() / np.abs(f['test_new']).max()
assert rel_b < 1e-5, f"batch 7 and batch 32 give different new features ({rel_b:.2g})"
assert e0['checkpoint']['step'] == 0 and e['checkpoint']['step'] == 12
assert not e0['accuracy']['new_head_new']['applicable'] and 'no-new-head' in e0['accuracy']['new_head_new']['reason']
# training moved the adapted features towards the old ones (the distillation term)
assert e['distance']['adapted_vs_old']['mean_l2'] < e0['distance']['adapted_vs_old']['mean_l2']

# a new model of another width: unadapted figures do not apply, adapted ones do
e8 = json.load(open(f'{t}/e8.json')); f8 = {k: np.load(f'{t}/f8/{k}.npy') for k in ('test_new', 'test_adapted')}
assert f8['test_new'].shape == (nt, 8) and f8['test_adapted'].shape == (nt, 16) and e8['dims']['new'] == 8
for node in (e8['retrieval']['new'], e8['accuracy']['old_head_new'], e8['distance']['new_vs_old']):
    assert node['applicable'] is False and '8' in node['reason'] and '16' in node['reason'], node
assert e8['retrieval']['adapted']['applicable'] and e8['accuracy']['new_head_new']['applicable']
assert e8['checkpoint'] == {'step': 12, 'peft': 'adapter/4', 'layers': '2-2', 'targets': 'old', 'projector_hidden': 64,
                            'trainable_parameters': e8['checkpoint']['trainable_parameters']}
check_ret(e8['retrieval']['adapted'], txt[test_idx], f8['test_adapted'], 'adapted (8-d new model)')
assert e8['retrieval']['old'] == e['retrieval']['old']

# LoRA: B starts at zero, so at step 0 the adapted features are the projector's too
el0, el4 = json.load(open(f'{t}/el0.json')), json.load(open(f'{t}/el4.json'))
assert el0['checkpoint']['peft'] == el4['checkpoint']['peft'] == 'lora/4' and el4['checkpoint']['layers'] == '1-2'
fl0 = {k: np.load(f'{t}/fl0/{k}.npy') for k in ('test_new', 'test_adapted')}
P = load_st(f'{t}/lora/step-000000.safetensors')
import struct
raw = open(f'{t}/lora/step-000004.safetensors', 'rb').read()
meta = json.loads(raw[8:8 + struct.unpack('<Q', raw[:8])[0]])['__metadata__']
assert meta['taca.lora_alpha'] == '2', meta  # eval takes the LoRA scale from here
assert all(not P[k].any() for k in P if k.startswith('lora.') and k.endswith('.B'))
hid = fl0['test_new'].astype(np.float64) @ P['projector.fc1.weight'].T.astype(np.float64) + P['projector.fc1.bias']
hid = hid * 0.5 * (1 + np.vectorize(math.erf)(hid / math.sqrt(2)))
proj = hid @ P['projector.fc2.weight'].T.astype(np.float64) + P['projector.fc2.bias']
assert np.abs(fl0['test_adapted'] - proj).max() < 1e-5 * np.abs(proj).max()
assert el4['distance']['adapted_vs_old']['mean_l2'] != el0['distance']['adapted_vs_old']['mean_l2']

# featured-mkstore's closed-form store: labels -1 where i % 13 == 5, no text where i % 17 == 3,
# embeddings periodic in i (mod 97): exact ties in retrieval
mk = json.load(open(f'{t}/mk.json'))
idx = [i for i in range(1000, 1300) if i % 17 != 3]
lab = {i: -1 if i % 13 == 5 else i % 10 for i in idx}
te = [i for i in idx if not u(0, i) < 0.8]; trn = [i for i in idx if u(0, i) < 0.8]
sp = mk['split']
assert sp['records'] == 300 and sp['skipped'] == 300 - len(idx) and sp['test_indices'] == te and sp['train'] == len(trn)
assert sp['test_labelled'] == sum(lab[i] >= 0 for i in te) and sp['train_labelled'] == sum(lab[i] >= 0 for i in trn)
assert list(np.load(f'{t}/fmk/test_label.npy')) == [lab[i] for i in te]
val = lambda i, mod: np.array([((i * 7 + j * 3 + 0 * 11 + mod * 5) % 97 - 48) / 64 for j in range(16)], np.float32)
Ti, Ii = np.stack([val(i, 1) for i in te]), np.stack([val(i, 0) for i in te])
assert np.array_equal(np.load(f'{t}/fmk/test_old_image.npy'), Ii) and np.array_equal(np.load(f'{t}/fmk/test_old_text.npy'), Ti)
assert len({tuple(r) for r in Ii}) < len(te), "expected exact ties in the closed-form store"
check_ret(mk['retrieval']['old'], Ti, Ii, 'closed-form store')
assert mk['retrieval']['adapted'] == {'applicable': False, 'reason': 'no --checkpoint given'}
assert mk['hot_plug']['applicable'] is False and mk['checkpoint'] is None and mk['training'] is None
assert mk['accuracy']['old_head_old']['applicable'] and mk['accuracy']['head']['classes'] == 10
print(f"  closed-form store: {sp['skipped']} skipped (no text), {sp['test']} test samples, retrieval with ties matches")
print("  split, retrieval, distances, head, step-0 projectors (adapter, LoRA) and the 8-d model: all match")
PY
grep -q "not applicable\|n/a (the new model embeds to 8 dims" "$tmp/table8.txt" || fail "the 8-d table does not say n/a"

# --- 4. the JSON's fields, the HTML, determinism ---
"$py" - "$tmp" <<'PY' || fail "JSON fields or HTML"
import json, re, sys, xml.etree.ElementTree as ET
t = sys.argv[1]
e = json.load(open(f'{t}/e.json'))
rec = {'r1', 'r5', 'r10', 'median_rank', 'mean_rank'}
need = {
    'taca_eval': None, 'inputs': {'db', 'old', 'old_arch', 'new_model', 'arch', 'checkpoint', 'log_json'},
    'dims': {'old_image', 'old_text', 'new', 'image_size'},
    'checkpoint': {'step', 'peft', 'layers', 'targets', 'projector_hidden', 'trainable_parameters'},
    'split': {'fraction', 'seed', 'group', 'rule', 'records', 'skipped', 'train', 'test', 'train_labelled', 'test_labelled', 'test_indices'},
    'chance': {'r1', 'r5', 'r10'}, 'retrieval': {'old', 'adapted', 'new'},
    'accuracy': {'head', 'old_head_old', 'old_head_adapted', 'old_head_new', 'new_head_new'},
    'distance': {'adapted_vs_old', 'new_vs_old'},
    'gate': None, 'compatibility': {'protocol', 'old_old', 'new_old', 'new_new', 'gain', 'update_gain', 'negative_flips'},
    'hot_plug': {'applicable', 'old_head_old', 'old_head_adapted', 'new_head_new', 'gain', 'upgrade_beats_old', 'within_upper_bound', 'holds'},
    'training': {'steps', 'first_step', 'last_step', 'series', 'first', 'last'}, 'timing': {'encoded_images', 'seconds', 'images_per_s'},
}
assert set(e) == set(need), set(e) ^ set(need)
for k, v in need.items():
    if v: assert set(e[k]) == v, (k, set(e[k]) ^ v)
for k in ('old', 'adapted', 'new'):
    r = e['retrieval'][k]
    assert r['applicable'] and set(r) == {'applicable', 'n', 't2i', 'i2t'} and set(r['t2i']) == rec == set(r['i2t']), k
for k in ('old_head_old', 'old_head_adapted', 'old_head_new'):
    assert set(e['accuracy'][k]) == {'applicable', 'value'}
assert set(e['accuracy']['head']) == {'applicable', 'kind', 'classes', 'l2', 'iterations', 'lbfgs_status', 'objective', 'grad_norm', 'train_accuracy'}
for k in ('adapted_vs_old', 'new_vs_old'):
    assert set(e['distance'][k]) == {'applicable', 'n', 'mean_l2', 'mean_cosine', 'mean_norm', 'mean_norm_old'}
log = [json.loads(l) for l in open(f'{t}/log.json')]
tr = e['training']
assert tr['steps'] == len(log) == 12 and tr['series'] == ['loss', 'loss_contra', 'loss_distill']
assert all(abs(tr['last'][k] - log[-1][k]) <= 1e-9 * abs(log[-1][k]) for k in tr['series'])
assert e['timing']['encoded_images'] == e['split']['test'] + e['split']['train']

html = open(f'{t}/e.html', encoding='utf-8').read()
root = ET.fromstring(html.split('\n', 1)[1])  # after <!DOCTYPE html>; raises if not well-formed
svgs = list(root.iter('svg'))
assert len(svgs) == 3, len(svgs)
loss = svgs[0]
lines = list(loss.iter('polyline'))
assert len(lines) == 3 and all(len(p.get('points').split()) == 12 for p in lines), [p.get('points') for p in lines]
bars = [r for s in svgs[1:] for r in s.iter('rect') if r.get('class') == 'bar']
assert len(bars) == 6 * 4 + 4, len(bars)  # 6 recall groups x (old, adapted, new, chance) + 4 accuracies
tables = list(root.iter('table'))
assert len(tables) == 5 and any('adapted new (TaCA)' in ''.join(th.itertext()) for th in tables[0].iter('th'))
low = html.lower()
for bad in ('<script', '<link', 'src=', 'href=', 'url(', '@import', '<img'):
    assert bad not in low, f"external asset or script: {bad}"
acc = e['accuracy']['old_head_adapted']['value']
assert f"{100 * acc:.1f} %" in html
print(f"  JSON: all fields; HTML: well-formed, {len(svgs)} SVG charts, {len(lines)} loss curves, {len(bars)} bars, no external assets")
PY
grep -q "Cross-model retrieval" "$tmp/table.txt" && grep -q "zeta_old(phi^_new)" "$tmp/table.txt" || fail "table"
"$bin/taca" eval "${ev[@]}" --new-model "$model" --checkpoint "$tmp/ck/step-000012.safetensors" --log-json "$tmp/log.json" \
  --json "$tmp/again.json" --html "$tmp/again.html" > /dev/null
"$py" - "$tmp/e.json" "$tmp/again.json" <<'PY' || fail "eval is not deterministic"
import json, sys
a, b = [json.load(open(p)) for p in sys.argv[1:]]
for j in (a, b): j.pop('timing')
assert a == b
PY
sed -e 's/Encoded [0-9]* images in [0-9.]* s/X/' "$tmp/e.html" > "$tmp/h1"; sed -e 's/Encoded [0-9]* images in [0-9.]* s/X/' "$tmp/again.html" > "$tmp/h2"
cmp -s "$tmp/h1" "$tmp/h2" || fail "the HTML report is not deterministic"
echo "  a second run gives the same JSON and HTML"
"$bin/taca" eval "${ev[@]}" --new-model "$model" --no-new-head --split-group 4 --json "$tmp/g4.json" > /dev/null
"$py" - "$tmp/e.json" "$tmp/g4.json" <<'PY' || fail "--split-group"
import json, sys
def u(seed, i):  # the split hash of services/eval/metrics.h
    M = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + i * 0xD1B54A32D192ED03 + 1) & M
    z ^= z >> 30; z = (z * 0xBF58476D1CE4E5B9) & M; z ^= z >> 27; z = (z * 0x94D049BB133111EB) & M; z ^= z >> 31
    return (z >> 11) * 2.0 ** -53
a, g = [json.load(open(p)) for p in sys.argv[1:]]
t = g['split']['test_indices']
assert g['split']['group'] == 4 and a['split']['group'] == 1
assert t == [i for i in range(240) if not u(5, i // 4) < 0.75], "the grouped split is not u(seed, index / 4)"
assert all((i // 4) * 4 + k in t for i in t for k in range(4)), "a group is split"
assert t != a['split']['test_indices']
PY
echo "  --split-group 4: the split is decided by index / 4, groups stay whole"

# --- 5. bad input ---
check_bad() { # check_bad EXPECTED_RC PATTERN ARGS...
  local want=$1 pat=$2; shift 2
  set +e; out=$("$bin/taca" eval "$@" 2>&1 >/dev/null); rc=$?; set -e
  [ "$rc" -eq "$want" ] || fail "'$*' exited $rc, expected $want: $out"
  [ "$(echo "$out" | wc -l)" -eq 1 ] || fail "'$*' gave more than one line: $out"
  echo "$out" | grep -q -- "$pat" || fail "'$*': '$out' does not mention '$pat'"
}
q=(--quiet --threads 1)
check_bad 2 "required" --db "$tmp/db" --new-model "$model"
check_bad 2 "split" --db "$tmp/db" --old old --new-model "$model" --split 1.5
check_bad 2 "split-group" --db "$tmp/db" --old old --new-model "$model" --split-group 0
check_bad 2 "unknown" --db "$tmp/db" --old old --new-model "$model" --frobnicate
check_bad 1 "nope" "${q[@]}" --db "$tmp/db" --old nope --new-model "$model"
check_bad 1 "nowhere" "${q[@]}" --db "$tmp/nowhere" --old old --new-model "$model"
check_bad 1 "16" "${q[@]}" --db "$tmp/db" --old old --new-model "$model" --checkpoint "$tmp/ck8/step-000012.safetensors"
head -c 100 "$tmp/ck/step-000012.safetensors" > "$tmp/trunc.safetensors"
check_bad 1 "trunc.safetensors" "${q[@]}" --db "$tmp/db" --old old --new-model "$model" --checkpoint "$tmp/trunc.safetensors"
printf '{"step": 0, "loss": 1}\nnot json\n' > "$tmp/badlog.json"
check_bad 1 "line 2" "${q[@]}" --db "$tmp/db" --old old --new-model "$model" --log-json "$tmp/badlog.json"
echo "  bad input: one-line errors"
echo "test_eval: all checks passed"

#!/usr/bin/env python3
"""
Generate sbox.h: the bitsliced AES S-box S'(x) = S(x) ^ 0x63 and inverse S-box
InvS(y ^ 0x63) used by xts.c (the 0x63 constants are folded into round keys).

Both keep the non-linear middle of the Boyar-Peralta depth-16 circuit
(J. Boyar, R. Peralta, "A depth-16 circuit for the AES S-box", 2012; listing
below, with its four output XNORs written as XORs). Their linear top and bottom
layers are re-synthesised here with the Boyar-Peralta shortest-linear-program
heuristic (Boyar, Peralta, "A new combinational logic minimization technique
with applications to cryptology", SEA 2010):
  forward: the circuit's own linear maps;
  inverse: InvS(y ^ 0x63) = L(S'(L(y))), L the linear part of the inverse affine
           map (FIPS-197 5.3.2), so L is merged into the top and bottom maps.
Every generated circuit is checked on all 256 inputs against a table computed
here from the field definition (FIPS-197 5.1.1). Deterministic (fixed seed).
Needs python3 and numpy; the build does not run this, sbox.h is committed.
Usage: python3 native/wasm/gen_sbox.py > native/wasm/sbox.h
"""
import random
import re
import sys

import numpy as np

# Boyar-Peralta depth-16 S-box circuit. U0 / S0 are the most significant bits.
# "+" is XOR, "x" is AND.
BP_CIRCUIT = """
T1 = U0 + U3; T2 = U0 + U5; T3 = U0 + U6; T4 = U3 + U5; T5 = U4 + U6; T6 = T1 + T5
T7 = U1 + U2; T8 = U7 + T6; T9 = U7 + T7; T10 = T6 + T7; T11 = U1 + U5; T12 = U2 + U5
T13 = T3 + T4; T14 = T6 + T11; T15 = T5 + T11; T16 = T5 + T12; T17 = T9 + T16
T18 = U3 + U7; T19 = T7 + T18; T20 = T1 + T19; T21 = U6 + U7; T22 = T7 + T21
T23 = T2 + T22; T24 = T2 + T10; T25 = T20 + T17; T26 = T3 + T16; T27 = T1 + T12
M1 = T13 x T6; M2 = T23 x T8; M3 = T14 + M1; M4 = T19 x U7; M5 = M4 + M1; M6 = T3 x T16
M7 = T22 x T9; M8 = T26 + M6; M9 = T20 x T17; M10 = M9 + M6; M11 = T1 x T15
M12 = T4 x T27; M13 = M12 + M11; M14 = T2 x T10; M15 = M14 + M11; M16 = M3 + M2
M17 = M5 + T24; M18 = M8 + M7; M19 = M10 + M15; M20 = M16 + M13; M21 = M17 + M15
M22 = M18 + M13; M23 = M19 + T25; M24 = M22 + M23; M25 = M22 x M20; M26 = M21 + M25
M27 = M20 + M21; M28 = M23 + M25; M29 = M28 x M27; M30 = M26 x M24; M31 = M20 x M23
M32 = M27 x M31; M33 = M27 + M25; M34 = M21 x M22; M35 = M24 x M34; M36 = M24 + M25
M37 = M21 + M29; M38 = M32 + M33; M39 = M23 + M30; M40 = M35 + M36; M41 = M38 + M40
M42 = M37 + M39; M43 = M37 + M38; M44 = M39 + M40; M45 = M42 + M41; M46 = M44 x T6
M47 = M40 x T8; M48 = M39 x U7; M49 = M43 x T16; M50 = M38 x T9; M51 = M37 x T17
M52 = M42 x T15; M53 = M45 x T27; M54 = M41 x T10; M55 = M44 x T13; M56 = M40 x T23
M57 = M39 x T19; M58 = M43 x T3; M59 = M38 x T22; M60 = M37 x T20; M61 = M42 x T1
M62 = M45 x T4; M63 = M41 x T2
L0 = M61 + M62; L1 = M50 + M56; L2 = M46 + M48; L3 = M47 + M55; L4 = M54 + M58
L5 = M49 + M61; L6 = M62 + L5; L7 = M46 + L3; L8 = M51 + M59; L9 = M52 + M53
L10 = M53 + L4; L11 = M60 + L2; L12 = M48 + M51; L13 = M50 + L0; L14 = M52 + M61
L15 = M55 + L1; L16 = M56 + L0; L17 = M57 + L1; L18 = M58 + L8; L19 = M63 + L4
L20 = L0 + L1; L21 = L1 + L7; L22 = L3 + L12; L23 = L18 + L2; L24 = L15 + L9
L25 = L6 + L10; L26 = L7 + L9; L27 = L8 + L10; L28 = L11 + L14; L29 = L11 + L17
S0 = L6 + L24; S1 = L16 + L26; S2 = L19 + L28; S3 = L6 + L21; S4 = L20 + L22
S5 = L25 + L29; S6 = L13 + L27; S7 = L6 + L23
"""

GATES = [tuple(m) for m in re.findall(r"(\w+) = (\w+) ([+x]) (\w+)", BP_CIRCUIT)]
BOTTOM_VARS = [f"M{i}" for i in range(46, 64)]


def split_circuit():
    """Top linear forms (over plane bits), the non-linear middle, bottom forms (over M46..M63)."""
    top = {f"U{i}": 1 << (7 - i) for i in range(8)}  # U_i is bit plane 7-i
    bottom = {v: 1 << k for k, v in enumerate(BOTTOM_VARS)}
    middle, out = [], {}
    for name, a, op, b in GATES:
        if name[0] == "T":
            top[name] = top[a] ^ top[b]
        elif name[0] == "M":
            middle.append((name, "A" if op == "x" else "X", a, b))
        elif name[0] == "L":
            bottom[name] = bottom[a] ^ bottom[b]
        else:  # S_i is bit plane 7-i
            out[7 - int(name[1:])] = bottom[a] ^ bottom[b]
    inputs = sorted({x for _, _, a, b in middle for x in (a, b) if x in top}, key=lambda s: (s[0], int(s[1:])))
    return {s: top[s] for s in inputs}, middle, [out[c] for c in range(8)]


def shortest_linear_program(targets, nvars, rng):
    """Boyar-Peralta heuristic: grow a base set by the XOR of two bases that most reduces the distances."""
    size = 1 << nvars
    base = [1 << i for i in range(nvars)]
    prog = []

    def dist_table():
        d = np.full(size, 255, dtype=np.uint8)
        d[0] = 0
        frontier = np.array([0], dtype=np.int64)
        level = 0
        while frontier.size and level < 254:
            level += 1
            nxt = np.unique(np.concatenate([frontier ^ b for b in base]))
            nxt = nxt[d[nxt] == 255]
            d[nxt] = level
            frontier = nxt
        return d

    t = np.array(targets, dtype=np.int64)
    while True:
        d = dist_table()
        cur = d[t].astype(np.int64)
        if (cur <= 1).all():
            break
        best, best_key = [], None
        for i in range(len(base)):
            for j in range(i + 1, len(base)):
                c = base[i] ^ base[j]
                if c in base:
                    continue
                nd = np.minimum(cur, 1 + d[t ^ c].astype(np.int64))
                if c in targets:  # a target reached directly: always take it
                    key = (-1, 0)
                else:
                    key = (int(nd.sum()), -int((nd * nd).sum()))
                if best_key is None or key < best_key:
                    best, best_key = [(i, j)], key
                elif key == best_key:
                    best.append((i, j))
        i, j = rng.choice(best)
        prog.append((len(base), i, j))
        base.append(base[i] ^ base[j])
    where = [base.index(f) for f in targets]
    return prog, where


def gmul(a, b):
    p = 0
    for _ in range(8):
        if b & 1:
            p ^= a
        hi = a & 0x80
        a = (a << 1) & 0xFF
        if hi:
            a ^= 0x1B
        b >>= 1
    return p


def sbox_table():
    s = []
    for x in range(256):
        inv = 0 if x == 0 else next(y for y in range(1, 256) if gmul(x, y) == 1)
        v, r = inv, inv
        for _ in range(4):
            r = ((r << 1) | (r >> 7)) & 0xFF
            v ^= r
        s.append(v ^ 0x63)
    return s


def apply_rows(rows, form):
    """form over outputs of a linear map (rows[c] = form of output c) -> form over its inputs."""
    r = 0
    for c in range(8):
        if form >> c & 1:
            r ^= rows[c]
    return r


def build(kind, trials):
    top, middle, bottom = split_circuit()
    names = list(top)
    top_forms = list(top.values())
    bot_forms = bottom
    if kind == "inv":
        # L: plane c <- planes c+2, c+5, c+7 (FIPS-197 inverse affine map without its constant)
        lrows = [(1 << ((c + 2) % 8)) | (1 << ((c + 5) % 8)) | (1 << ((c + 7) % 8)) for c in range(8)]
        top_forms = [apply_rows(lrows, f) for f in top_forms]
        bot_forms = [apply_rows(bottom, lrows[c]) for c in range(8)]
    best = None
    for seed in range(trials):
        rng = random.Random(seed)
        tp = shortest_linear_program(top_forms, 8, rng)
        bp = shortest_linear_program(bot_forms, len(BOTTOM_VARS), rng)
        cost = len(tp[0]) + len(bp[0])
        if best is None or cost < best[0]:
            best = (cost, tp, bp)
    _, (tprog, twhere), (bprog, bwhere) = best
    return names, tprog, twhere, middle, bprog, bwhere


def to_c(kind, names, tprog, twhere, middle, bprog, bwhere):
    fn = "sub_bytes" if kind == "fwd" else "inv_sub_bytes"
    tsig = [f"y{c}" for c in range(8)] + [f"t{k}" for k in range(len(tprog))]
    bsig = BOTTOM_VARS + [f"b{k}" for k in range(len(bprog))]
    lines = [f"static inline void {fn}(V r[8]) {{"]
    lines.append("  const V " + ", ".join(f"y{c} = r[{c}]" for c in range(8)) + ";")
    for k, (_, i, j) in enumerate(tprog):
        lines.append(f"  const V t{k} = X({tsig[i]}, {tsig[j]});")
    lines.append("  const V " + ", ".join(f"{n} = {tsig[w]}" for n, w in zip(names, twhere)) + ";")
    for n, op, a, b in middle:
        lines.append(f"  const V {n} = {op}({a}, {b});")
    for k, (_, i, j) in enumerate(bprog):
        lines.append(f"  const V b{k} = X({bsig[i]}, {bsig[j]});")
    for c in range(8):
        lines.append(f"  r[{c}] = {bsig[bwhere[c]]};")
    lines.append("}")
    return "\n".join(lines)


def simulate(names, tprog, twhere, middle, bprog, bwhere, x):
    tsig = [(x >> c) & 1 for c in range(8)]
    for _, i, j in tprog:
        tsig.append(tsig[i] ^ tsig[j])
    env = {n: tsig[w] for n, w in zip(names, twhere)}
    for n, op, a, b in middle:
        env[n] = env[a] ^ env[b] if op == "X" else env[a] & env[b]
    bsig = [env[v] for v in BOTTOM_VARS]
    for _, i, j in bprog:
        bsig.append(bsig[i] ^ bsig[j])
    return sum(bsig[bwhere[c]] << c for c in range(8))


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    sbox = sbox_table()
    inv = [0] * 256
    for x in range(256):
        inv[sbox[x]] = x
    parts = []
    for kind in ("fwd", "inv"):
        names, tprog, twhere, middle, bprog, bwhere = build(kind, trials)
        for x in range(256):
            want = sbox[x] ^ 0x63 if kind == "fwd" else inv[x ^ 0x63]
            if simulate(names, tprog, twhere, middle, bprog, bwhere, x) != want:
                raise SystemExit(f"{kind} circuit wrong at {x}")
        nxor = len(tprog) + len(bprog) + sum(1 for g in middle if g[1] == "X")
        nand = sum(1 for g in middle if g[1] == "A")
        desc = "S'(x) = S(x) ^ 0x63" if kind == "fwd" else "InvS(y ^ 0x63)"
        parts.append(f"/* {desc}: {nxor} XOR + {nand} AND (top {len(tprog)}, bottom {len(bprog)} XOR) */\n"
                     + to_c(kind, names, tprog, twhere, middle, bprog, bwhere))
    print("/* Generated by native/wasm/gen_sbox.py; do not edit. Bit plane c holds bit c of every byte. */")
    print("\n\n".join(parts))


if __name__ == "__main__":
    main()

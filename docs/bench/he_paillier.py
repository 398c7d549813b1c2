"""python-paillier (phe, 2048-bit keys) on a slice of the homomorphic-aggregate
job: C contributors x N categories, encrypt, add, decrypt; prints the measured
times and the extrapolation to 31 x 2048 (docs/benchmarks.md).
Usage: he_paillier.py [CONTRIBUTORS] [CATEGORIES]"""
import random
import sys
import time

from phe import paillier

C = int(sys.argv[1]) if len(sys.argv) > 1 else 2
N = int(sys.argv[2]) if len(sys.argv) > 2 else 64
t = time.process_time()
pk, sk = paillier.generate_paillier_keypair(n_length=2048)
keygen = time.process_time() - t
rng = random.Random(1)
data = [[rng.randrange(1 << 44) for _ in range(N)] for _ in range(C)]
t = time.process_time()
enc = [[pk.encrypt(v) for v in row] for row in data]
encrypt = time.process_time() - t
t = time.process_time()
total = enc[0]
for row in enc[1:]:
    total = [a + b for a, b in zip(total, row)]
aggregate = time.process_time() - t
t = time.process_time()
sums = [sk.decrypt(x) for x in total]
decrypt = time.process_time() - t
assert sums == [sum(col) for col in zip(*data)]
per_value_enc = encrypt / (C * N)
per_add = aggregate / max(1, (C - 1) * N)
per_dec = decrypt / N
full = 31 * 2048 * per_value_enc + 30 * 2048 * per_add + 2048 * per_dec
print(f"phe slice {C}x{N}: keygen {keygen:.2f}s encrypt {encrypt:.2f}s aggregate {aggregate:.3f}s decrypt {decrypt:.2f}s (CPU)")
print(f"phe extrapolated to 31 x 2048 (sums only, 1 ciphertext per value): {full:.0f} s of CPU")

"""Surprise SVD on ml-100k u1.base/u1.test, for `coordinator --solver sgd`,
and with --svdpp Surprise's SVD++ too, for `coordinator --solver gibbs`.

    ~/.anchors/bin/python bench/surprise_u1.py ../shared/data/ml-100k [--svdpp]

Two settings: k=64, 30 epochs, lr 0.007, reg 0.05 (the figure `--solver sgd`
is compared with) and Surprise's defaults (k=100, 20 epochs, lr 0.005, reg
0.02). SVD++ runs at Surprise's defaults (k=20, 20 epochs, lr 0.007, reg
0.02), the setting of its published benchmark. RMSE is Surprise's own (predictions clipped to 1..5, as the
coordinator's `rmse`); fit seconds are SVD.fit on the built trainset.
"""
import sys
import time

from surprise import SVD, SVDpp, Dataset, Reader, accuracy
from surprise.model_selection import PredefinedKFold

folder = sys.argv[1].rstrip("/") + "/"
svdpp = "--svdpp" in sys.argv[2:]
reader = Reader(line_format="user item rating timestamp", sep="\t", rating_scale=(1, 5))
data = Dataset.load_from_folds([(folder + "u1.base", folder + "u1.test")], reader)
for trainset, testset in PredefinedKFold().split(data):
    for factors, epochs, lr, reg in [(64, 30, 0.007, 0.05), (100, 20, 0.005, 0.02)]:
        algo = SVD(n_factors=factors, n_epochs=epochs, lr_all=lr, reg_all=reg, random_state=42)
        t = time.perf_counter()
        algo.fit(trainset)
        s = time.perf_counter() - t
        rmse = accuracy.rmse(algo.test(testset), verbose=False)
        print(f"surprise SVD k={factors} epochs={epochs} lr={lr} reg={reg}: rmse {rmse:.4f}, {s / epochs:.4f} s/epoch")
    if svdpp:
        algo = SVDpp(random_state=42)
        t = time.perf_counter()
        algo.fit(trainset)
        s = time.perf_counter() - t
        rmse = accuracy.rmse(algo.test(testset), verbose=False)
        print(f"surprise SVD++ defaults (k=20, 20 epochs): rmse {rmse:.4f}, {s:.1f} s to fit")

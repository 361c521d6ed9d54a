"""Three teachers of your own on scikit-learn's digits, distilled into students through the engine.

Each teacher sees a different view of the 8x8 image (left half, top half, 2x2-pooled) and is a
different small model; wrapped as engine Teachers they go into a TeacherPool, their outputs are
cached once on disk, and two students learn on unlabelled images: one from the teachers' median
consensus, one through a Router that learned on the labelled images which teacher to trust.
"""

import hashlib
import pickle

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

import multiteacher as mt

VIEWS = {"left": lambda x: x.reshape(-1, 8, 8)[:, :, :4].reshape(len(x), -1),
         "top": lambda x: x.reshape(-1, 8, 8)[:, :4].reshape(len(x), -1),
         "pooled": lambda x: x.reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(len(x), -1)}


class SklearnTeacher:
    """Any fitted scikit-learn classifier on one view of the image, as an engine Teacher (log-probs)."""

    def __init__(self, name, model, view):
        self.name, self.model, self.view = name, model, view
        self.fingerprint = hashlib.sha256(pickle.dumps((name, model))).hexdigest()

    def predict(self, x):
        return torch.from_numpy(np.log(self.model.predict_proba(self.view(np.asarray(x))) + 1e-4)).float()


x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32)
idx = np.arange(len(x))
lab, rest = train_test_split(idx, train_size=300, stratify=y, random_state=0)   # labelled: teachers, router
unl, test = train_test_split(rest, test_size=500, stratify=y[rest], random_state=0)  # students see no labels
models = {"left": LogisticRegression(max_iter=2000), "top": LogisticRegression(max_iter=2000),
          "pooled": KNeighborsClassifier(5)}
pool = mt.TeacherPool([SklearnTeacher(n, m.fit(VIEWS[n](x[lab]), y[lab]), VIEWS[n]) for n, m in models.items()])
cached = pool.cached_outputs(x, idx.tolist(), mt.data_fingerprint(ids=idx.tolist(), config="sklearn-digits"),
                             progress=False)
t_logits = cached.torch(idx)  # (B, K, 10): every teacher's log-probs for every image, from the cache
X = torch.from_numpy(x)
for k, name in enumerate(pool.names):
    print(f"teacher {name}: {mt.accuracy(t_logits[test, k].argmax(-1), y[test]):.3f}")
print(f"consensus (median, no training): {mt.accuracy(mt.median(t_logits[test]).argmax(-1), y[test]):.3f}")

# The router learns, on the labelled images, which teacher gives the true class the most probability.
torch.manual_seed(0)
router = mt.Router(num_teachers=len(pool), in_features=64, hidden=32)
trust = t_logits[lab].gather(2, torch.from_numpy(y[lab]).view(-1, 1, 1).expand(-1, len(pool), 1))[..., 0]
opt = torch.optim.Adam(router.parameters(), lr=1e-2)
for _ in range(200):
    loss = torch.nn.functional.cross_entropy(router(X[lab]).logits, trust.softmax(-1))
    opt.zero_grad(), loss.backward(), opt.step()


def distil(loss_fn):
    """A linear student trained on the unlabelled images (no labels) with `loss(student_logits, teacher_logits)`."""
    torch.manual_seed(0)
    student = torch.nn.Linear(64, 10)
    opt = torch.optim.Adam(student.parameters(), lr=0.05)
    for _ in range(300):
        loss = loss_fn(student(X[unl]), t_logits[unl])
        opt.zero_grad(), loss.backward(), opt.step()
    return mt.accuracy(student(X[test]).argmax(-1), y[test])


print(f"student (consensus): {distil(lambda s, t: mt.kd_kl(s, mt.median(t), temperature=2.0)):.3f}")
with torch.no_grad():
    routed = router(X[unl]).weights
print(f"student (router): {distil(lambda s, t: mt.multi_teacher_kd(s, t, 2.0, weights=routed)):.3f}")
print(f"chance (majority class): {np.bincount(y[test]).max() / len(test):.3f}")

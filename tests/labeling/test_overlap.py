"""GpuGate: model calls one at a time, CPU work of another thread runs meanwhile; a gated
labeler driven from two threads writes the records it writes alone."""
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

from labeling.overlap import GatedModel, GpuGate, gate_labeler


class _Model:
    def __init__(self):
        self.active, self.most, self.lock = 0, 0, threading.Lock()
        self.inside = threading.Event()
        self.release = threading.Event()
        self.config = "cfg"

    def __call__(self, x):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        self.inside.set()
        self.release.wait(5)
        with self.lock:
            self.active -= 1
        return x * 2

    def get_image_embeddings(self, x):
        return self(x)


def test_gate_serialises_calls_and_lets_cpu_work_through():
    gate = GpuGate(sync_cuda=False)
    m = _Model()
    g = GatedModel(m, gate)
    assert g.config == "cfg"                       # other attributes are the model's
    cpu_done = threading.Event()
    with ThreadPoolExecutor(2) as ex:
        first = ex.submit(g, 1)
        assert m.inside.wait(5)                    # thread 1 holds the gate ...
        second = ex.submit(lambda: (cpu_done.set(), g.get_image_embeddings(2))[1])
        assert cpu_done.wait(5)                    # ... thread 2's CPU part runs anyway
        m.release.set()
        assert (first.result(5), second.result(5)) == (2, 4)
    assert m.most == 1                             # never two model calls at once
    st = gate.stats()
    assert st["calls"] == 2 and st["wait_s"] > 0 and 0 < st["busy_share"] <= 1


def test_gated_labeler_two_threads_same_records(imagenet_sample):
    from labeling.folder import list_images, read_item
    from labeling.labeler import Labeler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab = Labeler.from_preset("tiny-random")
    keys = list_images(str(imagenet_sample))[:4]
    preps = [lab.prepare(read_item(str(imagenet_sample), k, w)) for k, w in keys]
    alone = [lab.label(preps[:2]), lab.label(preps[2:])]   # same batches (padding differs)
    gate = gate_labeler(lab)
    assert isinstance(lab.detector.model, GatedModel)
    assert gate_labeler(lab) is gate               # idempotent: the models stay wrapped once
    with ThreadPoolExecutor(2) as ex:
        halves = list(ex.map(lab.label, [preps[:2], preps[2:]]))
    assert halves == alone
    assert gate.stats()["calls"] >= 3 * 2

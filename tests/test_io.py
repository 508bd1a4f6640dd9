"""save/load resume real training objects exactly; import/export weights never unpickle."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from savegame.checkpoint.safetensors_io import read_header
from savegame.errors import FormatVersionError, NotSerializableError, StateMismatchError
from savegame.io import export_weights, import_weights, load, save


def assert_state_equal(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_state_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_state_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    else:
        assert type(a) is type(b) and (a == b or a != a and b != b), f"{where}: {a!r} != {b!r}"


def make(seed, optimizer="adam"):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        sched = OneCycleLR(opt, max_lr=0.05, total_steps=40)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, nesterov=True)
        sched = ReduceLROnPlateau(opt, patience=1)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        sched = LambdaLR(opt, lambda epoch: 0.9**epoch)
    return {"model": model, "optimizer": opt, "lr_schedule": sched, "scaler": torch.amp.GradScaler("cpu")}


def train(objs, steps):
    model, opt, sched, scaler = objs["model"], objs["optimizer"], objs["lr_schedule"], objs["scaler"]
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 4)  # data and dropout draw from the global torch RNG
        loss = nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step(loss.item()) if isinstance(sched, ReduceLROnPlateau) else sched.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adamw"])
def test_resuming_from_a_checkpoint_continues_training_identically(tmp_path, optimizer):
    objs = make(0, optimizer)
    train(objs, 6)
    info = save(tmp_path / "ckpt", {**objs, "rng": torch.get_rng_state(), "step": 6, "epoch": 1})
    expected = train(objs, 6)

    fresh = make(1, optimizer)
    assert fresh["scaler"].is_enabled()
    state = load(info.path, into={k: fresh[k] for k in ("model", "optimizer", "lr_schedule", "scaler")})
    torch.set_rng_state(state["rng"])
    assert train(fresh, 6) == expected
    assert_state_equal(objs["model"].state_dict(), fresh["model"].state_dict())
    assert_state_equal(objs["optimizer"].state_dict(), fresh["optimizer"].state_dict())
    assert_state_equal(objs["lr_schedule"].state_dict(), fresh["lr_schedule"].state_dict())
    assert_state_equal(objs["scaler"].state_dict(), fresh["scaler"].state_dict())


def test_scheduler_and_scaler_states_round_trip_exactly(tmp_path):
    objs = make(0, "sgd")
    train(objs, 3)
    assert objs["lr_schedule"].state_dict()["mode_worse"] == float("inf")
    save(tmp_path / "c", objs)
    fresh = make(1, "sgd")
    load(tmp_path / "c", into=fresh)
    for key in objs:
        assert_state_equal(objs[key].state_dict(), fresh[key].state_dict(), key)


def test_rng_states_restore_the_same_random_numbers(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    rng = np.random.default_rng(4)
    save(tmp_path / "rng", {"python": random.getstate(), "numpy": np.random.get_state(),
                            "generator": rng.bit_generator.state, "torch": torch.get_rng_state()})
    expected = (random.random(), np.random.rand(), rng.random(), torch.rand(1).item())
    state = load(tmp_path / "rng")
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    rng.bit_generator.state = state["generator"]
    torch.set_rng_state(state["torch"])
    assert (random.random(), np.random.rand(), rng.random(), torch.rand(1).item()) == expected


def test_step_and_epoch_default_to_the_saved_values(tmp_path):
    assert (save(tmp_path / "a", {"step": 100, "epoch": 4}).step, save(tmp_path / "a", {"epoch": 4}).epoch) == (100, 4)
    info = save(tmp_path / "b", {"epoch": 2.5, "step": True}, metrics={"loss": 0.1})
    assert (info.step, info.epoch, info.metrics) == (0, 0, {"loss": 0.1})
    assert save(tmp_path / "c", {"step": 1}, step=7, epoch=3).step == 7


def test_saving_again_replaces_the_checkpoint_atomically(tmp_path):
    save(tmp_path / "ckpt", {"v": 1})
    save(tmp_path / "ckpt", {"v": 2})
    assert load(tmp_path / "ckpt") == {"v": 2} and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_single_file_name_is_refused_with_a_hint(tmp_path):
    with pytest.raises(ValueError, match="checkpoint folder.*'.*model'.*export_weights"):
        save(tmp_path / "model.pt", {"v": 1})
    assert not (tmp_path / "model.pt").exists()


def test_a_value_that_cannot_be_saved_names_its_path_and_writes_nothing(tmp_path):
    with pytest.raises(NotSerializableError, match=r"extras\['paths'\]\[1\].*str\(path\)"):
        save(tmp_path / "ckpt", {"model": nn.Linear(1, 1), "extras": {"paths": ["a", Path("b")]}})
    assert list(tmp_path.iterdir()) == []


def test_tied_weights_are_saved_once_and_load_into_a_tied_model(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight

    net = Tied()
    info = save(tmp_path / "c", {"model": net})
    names = set(read_header(info.path / "tensors.safetensors")[0]) - {"__metadata__"}
    assert names == {"model/embed.weight"}
    fresh = Tied()
    load(info.path, into={"model": fresh})
    assert fresh.head.weight is fresh.embed.weight and torch.equal(fresh.embed.weight, net.embed.weight)


def test_mismatched_models_list_every_missing_unexpected_and_reshaped_key(tmp_path):
    saved = nn.ModuleDict({"a": nn.Linear(4, 3), "b": nn.Linear(3, 2)})
    save(tmp_path / "c", {"model": saved, "optimizer": torch.optim.SGD(saved.parameters(), lr=0.1)})
    other = nn.ModuleDict({"a": nn.Linear(4, 5), "c": nn.Linear(3, 2)})
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(StateMismatchError) as e:
        load(tmp_path / "c", into={"model": other, "scaler": torch.amp.GradScaler("cpu")})
    message = str(e.value)
    for text in ["c.weight, c.bias", "b.weight, b.bias", "a.weight: saved (3, 4), model (5, 4)",
                 "a.bias: saved (3,), model (5,)", "'scaler' is not in the checkpoint", "strict=False"]:
        assert text in message
    assert_state_equal(before, other.state_dict())  # nothing was loaded


def test_strict_false_loads_what_matches_and_warns(tmp_path):
    saved = nn.ModuleDict({"a": nn.Linear(4, 3), "b": nn.Linear(3, 2)})
    save(tmp_path / "c", {"model": saved})
    other = nn.ModuleDict({"a": nn.Linear(4, 3), "b": nn.Linear(3, 7)})
    with pytest.warns(UserWarning, match="b.weight: saved"):
        load(tmp_path / "c", into={"model": other}, strict=False)
    assert torch.equal(other.a.weight, saved.a.weight) and not torch.equal(other.b.bias[:2], saved.b.bias)


def test_a_run_folder_points_to_savegame_run_and_its_checkpoints(tmp_path):
    save(tmp_path / "run" / "checkpoints" / "step-000010", {"v": 1})
    (tmp_path / "run" / "run.json").write_text("{}")
    with pytest.raises(FormatVersionError, match=r"savegame.Run\(.*step-000010"):
        load(tmp_path / "run")



def test_load_refuses_torch_save_files_without_unpickling(tmp_path, pickle_bomb):
    Boom, marker = pickle_bomb
    torch.save({"model": Boom()}, tmp_path / "model.pt")
    with pytest.raises(FormatVersionError, match="import_weights"):
        load(tmp_path / "model.pt")
    with pytest.raises(FormatVersionError, match="unpickling"):
        import_weights(tmp_path / "model.pt")
    assert not marker.exists()


def test_import_weights_refuses_whole_pickled_models_with_a_fix(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "whole.pt")
    with pytest.raises(FormatVersionError) as e:
        import_weights(tmp_path / "whole.pt")
    assert "weights_only=False" in str(e.value) and "trust" in str(e.value)


@pytest.mark.parametrize("wrap", [
    lambda sd: sd, lambda sd: {"model": sd, "epoch": 3, "optimizer": {"state": {}, "param_groups": []}},
    lambda sd: {"state_dict": sd, "hyper_parameters": {"lr": 0.1}}, lambda sd: {"net": sd},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
])
def test_import_weights_finds_the_state_dict_in_common_layouts(tmp_path, wrap):
    source = nn.Linear(3, 2)
    torch.save(wrap(source.state_dict()), tmp_path / "w.pth")
    target = nn.Linear(3, 2)
    import_weights(tmp_path / "w.pth", into=target)
    assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, source.bias)


def test_import_weights_reads_safetensors_and_checks_shapes(tmp_path):
    save_file(nn.Linear(3, 2).state_dict(), tmp_path / "w.safetensors")
    assert sorted(import_weights(tmp_path / "w.safetensors")) == ["bias", "weight"]
    with pytest.raises(StateMismatchError, match=r"weight: saved \(2, 3\), model \(4, 3\)"):
        import_weights(tmp_path / "w.safetensors", into=nn.Linear(3, 4))
    torch.save({"a": {"b": 1}}, tmp_path / "none.pt")
    with pytest.raises(KeyError, match="key=..."):
        import_weights(tmp_path / "none.pt")


def test_exported_weights_load_with_the_safetensors_library(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ckpt = save(tmp_path / "c", {"model": net, "optimizer": torch.optim.Adam(net.parameters()), "step": 9}).path
    out = export_weights(ckpt, tmp_path / "model.safetensors")
    assert_state_equal(dict(net.state_dict()), {k: load_file(out)[k] for k in net.state_dict()})
    with safe_open(out, framework="pt") as f:
        assert f.metadata()["format"] == "pt" and f.metadata()["step"] == "9"


def test_export_weights_needs_a_key_when_several_models_were_saved(tmp_path):
    ckpt = save(tmp_path / "c", {"encoder": nn.Linear(2, 2), "decoder": nn.Linear(2, 3)}).path
    with pytest.raises(KeyError, match="'encoder', 'decoder'.*key="):
        export_weights(ckpt, tmp_path / "w.safetensors")
    out = export_weights(ckpt, tmp_path / "w.safetensors", key="decoder")
    assert load_file(out)["weight"].shape == (3, 2)
    assert json.loads((ckpt / "manifest.json").read_text())["info"]["objects"]["encoder"]["kind"] == "module"


def to_cpu(tree):
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_state_resumes_on_the_gpu(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(8, 4).cuda()
    opt = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cuda")
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(torch.randn(16, 8, device="cuda")).float().pow(2).mean()
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    info = save(tmp_path / "c", {"model": model, "optimizer": opt, "scaler": scaler,
                                 "cuda_rng": torch.cuda.get_rng_state()})
    manifest = json.loads((info.path / "manifest.json").read_text())
    assert manifest["state"]["model"]["weight"]["device"] == "cuda:0"

    fresh = nn.Linear(8, 4).cuda()
    fresh_opt, fresh_scaler = torch.optim.Adam(fresh.parameters()), torch.amp.GradScaler("cuda")
    state = load(info.path, into={"model": fresh, "optimizer": fresh_opt, "scaler": fresh_scaler})
    assert state["model"]["weight"].device.type == "cpu"  # load_state_dict moved it to the GPU
    assert fresh.weight.is_cuda and fresh_opt.state_dict()["state"][0]["exp_avg"].is_cuda
    assert_state_equal(to_cpu(model.state_dict()), to_cpu(fresh.state_dict()))
    assert_state_equal(to_cpu(opt.state_dict()), to_cpu(fresh_opt.state_dict()))
    assert scaler.state_dict() == fresh_scaler.state_dict()
    on_gpu = load(info.path, map_location="cuda")
    assert on_gpu["model"]["weight"].is_cuda and on_gpu["optimizer"]["state"][0]["exp_avg"].is_cuda

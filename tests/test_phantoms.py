"""The phantoms' anatomy, physics and difficulty: what makes them hard, and that nothing leaks."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import yaml

from multimix.config import load_config
from multimix.data import difficulty, phantom, realism, synth, synth_chexseg, xray
from multimix.data.acquisition import Level
from multimix.data.acquire import synth_level, synthesise
from multimix.errors import InputError

from conftest import write_params

# One worker builds the paper-level project (about 100 s) once for the whole module.
pytestmark = pytest.mark.xdist_group("test_phantoms")

PAPER = Level(difficulty.resolve("segmentation", "paper"), difficulty.resolve("classification", "paper"))


@pytest.mark.parametrize("pediatric", [False, True])
def test_lungs_are_dark_and_pneumonia_fills_them(pediatric):
    """At every level the lungs are darker than the mediastinum, the masks lie on their own side,
    and pneumonia (fluid replacing air) raises the line integrals inside the lungs only."""
    for level in (0.0, 1.0):
        realism_ = difficulty.image_realism(level)
        normal = phantom.sample_anatomy(np.random.default_rng(3), pediatric=pediatric, realism=realism_)
        sick = phantom.sample_anatomy(np.random.default_rng(3), pediatric=pediatric, realism=realism_, abnormal=True)
        assert dataclasses.replace(sick, opacities=(), consolidations=(), haze=(0.0, 0.0)) == normal
        left, right = phantom.lung_masks(normal, 256, 256)
        lungs = left | right
        assert left[:, :128].sum() > 0.9 * left.sum() and right[:, 128:].sum() > 0.9 * right.sum()
        chest = xray.chest(normal, 256, 256, realism_)
        mediastinum = np.broadcast_to(np.abs(chest.x) < 0.05, lungs.shape) & np.broadcast_to(
            (chest.y > 0.2) & (chest.y < 0.5), lungs.shape)
        assert chest.L[lungs].mean() < chest.L[mediastinum].mean() - 0.6
        diff = xray.chest(sick, 256, 256, realism_).L - chest.L
        region = phantom.lesion_mask(sick, 256, 256, realism_)
        assert region.any() and diff[region].mean() > 0.1
        air = phantom.air_region(sick, chest.x, chest.y, realism_)
        assert np.abs(diff[~np.broadcast_to(air, diff.shape)]).mean() < diff[region].mean() / 10


def test_the_lucency_reaches_beyond_the_scr_mask_only_at_realistic_levels():
    """SCR masks exclude the lung behind the heart and below the dome (about 27 % of its volume,
    `shared/notes/phantom-realism.md`); at the easy level the air is exactly the mask, at the
    paper level part of it lies outside (the mask must be inferred from anatomy). Measured as
    the share of the projected air outside the mask, over 20 patients (one patient's share
    ranges from 5 % to 35 % at the paper level)."""
    for level, share in ((0.0, (0.0, 0.005)), (PAPER.segmentation, (0.05, 0.35))):
        r = difficulty.image_realism(level)
        rng = np.random.default_rng(11)
        shares = []
        for _ in range(20):
            a = phantom.sample_anatomy(rng, pediatric=False, realism=r)
            chest = xray.chest(a, 128, 128, r)
            mask = phantom.lung_mask(a, 128, 128)
            outside = ~mask
            for shift in range(-2, 3):  # away from the mask's edge (its anti-aliasing)
                outside &= ~np.roll(mask, shift, 0) & ~np.roll(mask, shift, 1)
            air_outside, air_inside = chest.air_depth[outside].sum(), chest.air_depth[mask].sum()
            shares.append(air_outside / (air_outside + air_inside))
        assert share[0] <= np.mean(shares) <= share[1], (level, np.mean(shares))


def test_masks_on_tilted_frames_equal_the_shape_function_everywhere():
    """`lung_masks` evaluates the shape only inside each lung's pixel box: on grids of many sizes,
    aspects and tilts it equals the shape function over the whole grid."""
    rng = np.random.default_rng(7)
    compared = 0
    for i in range(30):
        a = phantom.sample_anatomy(rng, pediatric=i % 3 == 0, realism=difficulty.image_realism(1.0),
                                   abnormal=i % 2 == 0, finding=("nodule", "tb", None)[i % 3])
        a = dataclasses.replace(a, tilt=float(rng.uniform(-0.1, 0.1)))
        h, w = int(rng.integers(24, 400)), int(rng.integers(24, 400))
        fast = phantom.lung_masks(a, h, w)
        x, y = phantom.Frame(a, h, w).coords()
        for side in (0, 1):
            full = np.broadcast_to(phantom._lung_field(a, side, x, y), (h, w))
            assert np.array_equal(fast[side], full)
            compared += int(full.sum())
    assert compared > 0


def test_lesion_masks_equal_the_findings_in_the_air_everywhere():
    """`lesion_mask` evaluates the air region only in the findings' box: on grids of many sizes,
    aspects and tilts, for every pattern and seed 003's findings, it equals the definition over
    the whole grid (findings and air region, pixel by pixel)."""
    rng = np.random.default_rng(11)
    realism_ = difficulty.image_realism(1.0)
    compared = 0
    for i in range(24):
        kind = ("patchy", "lobar", "interstitial", "nodule", "tb", "normal")[i % 6]
        a = phantom.sample_anatomy(rng, pediatric=i % 4 == 0, realism=realism_, abnormal=kind != "normal",
                                   finding=kind if kind in ("nodule", "tb") else None,
                                   pattern=kind if kind in phantom.PATTERNS else None,
                                   disease=difficulty.disease_realism(1.0))
        a = dataclasses.replace(a, tilt=float(rng.uniform(-0.1, 0.1)) if i % 2 else 0.0)
        h, w = int(rng.integers(24, 500)), int(rng.integers(24, 500))
        x, y = phantom.Frame(a, h, w).coords()
        full = np.broadcast_to(phantom.finding_region(a, x, y) & phantom.air_region(a, x, y, realism_), (h, w))
        assert np.array_equal(phantom.lesion_mask(a, h, w, realism_), full)
        compared += int(full.sum())
    assert compared > 0


def test_wide_blurs_by_fft_store_what_ndimage_stores():
    """The source processing's wide blurs go through an FFT (`xray.gaussian_blur`): on float32
    images of the working sizes and odd ones the result is ndimage's, bit for bit (narrow
    kernels, kernels wider than the image and float64 images go to ndimage itself)."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    for shape in ((512, 512), (358, 512), (512, 421), (97, 301)):
        for dtype in (np.float32, np.float64):
            image = rng.random(shape).astype(dtype)
            for share in (0.12, 0.04, 0.01, 0.5):
                sigma = share * max(shape)
                blurred = xray.gaussian_blur(image, sigma)
                assert blurred.dtype == image.dtype
                assert np.array_equal(blurred, ndimage.gaussian_filter(image, sigma)), (shape, dtype, share)


def test_frame_maps_points_to_pixels_and_back():
    a = dataclasses.replace(phantom.sample_anatomy(np.random.default_rng(2), pediatric=False), tilt=0.07)
    frame = phantom.Frame(a, 300, 420)
    x, y = frame.coords()
    for (px, py) in ((0.3, 0.4), (-0.6, 0.9), (0.0, 0.0)):
        row, col = frame.to_pixels(px, py)
        r, c = int(round(row)), int(round(col))
        assert abs(x[r, c] - px) < 0.02 and abs(y[r, c] - py) < 0.02


def test_noise_survives_to_the_training_size_only_at_realistic_levels():
    """Quantum noise is drawn so that it is still there after the area resize to 128 pixels: the
    pixel-to-pixel residual inside the lungs of the training view is far above the easy level's."""
    from scipy import ndimage

    def residual(level):
        drawn = synth._phantom("nihx", 0, 4, 1024, 1024, False, Level(level, 0.0))
        again = synth._phantom("nihx", 0, 4, 1024, 1024, False, Level(level, 0.0))
        assert np.array_equal(drawn.image, again.image)  # same seed, same pixels
        view = realism.training_view(drawn.image, 128)
        lungs = ndimage.binary_erosion(realism.mask_view(phantom.lung_mask(drawn.anatomy, 1024, 1024), 128), iterations=2)
        high = view - ndimage.uniform_filter(view, 3)
        return float(high[lungs].std())

    assert residual(PAPER.segmentation) > 2 * residual(0.0)


def test_acquisition_and_confounders_do_not_depend_on_the_label():
    """Nuisances come from streams of their own: the same image index draws the same
    acquisition, anatomy and confounders whether it is a pneumonia or not."""
    for dataset in ("chex", "nihx"):
        normal = synth._phantom(dataset, 3, 17, 700, 800, False, PAPER)
        sick = synth._phantom(dataset, 3, 17, 700, 800, True, PAPER)
        assert normal.acquisition == sick.acquisition
        assert normal.anatomy.confounders == sick.anatomy.confounders
        plain = dataclasses.replace(sick.anatomy, opacities=(), consolidations=(), haze=(0.0, 0.0))
        assert plain == normal.anatomy


def test_severity_has_subtle_cases_at_the_literature_level_and_none_when_easy():
    """The disease knob's range. (`paper` sits near its easy end, 0.046: at 100 labels the image
    at the literature's level is already as hard as the paper's Enc found CheX; docs/phantoms.md.)"""
    rng = np.random.default_rng(0)
    easy = [phantom.draw_severity(rng, difficulty.disease_realism(0.0)) for _ in range(2000)]
    literature = [phantom.draw_severity(rng, difficulty.disease_realism(1.0)) for _ in range(2000)]
    paper = [phantom.draw_severity(rng, difficulty.disease_realism(PAPER.classification)) for _ in range(2000)]
    assert min(easy) >= 0.6
    assert np.mean(np.array(literature) < 0.3) > 0.15
    assert min(literature) < min(paper) < min(easy)  # the paper level: milder than easy's, few subtle cases


def test_patterns_follow_the_cause_at_realistic_levels():
    disease = difficulty.disease_realism(1.0)
    patterns = {"bacteria": set(), "virus": set()}
    for i in range(200):
        for cause in patterns:
            a = phantom.sample_anatomy(np.random.default_rng(i), pediatric=True, abnormal=True, disease=disease,
                                       cause=cause)
            patterns[cause].add(synth._pattern(a))
    assert patterns["bacteria"] == {"patchy", "lobar"}
    assert patterns["virus"] == {"patchy", "interstitial"}


# ------------------------------------------------------------------ difficulty as parameters
@pytest.mark.parametrize("value, ok", [("easy", True), ("paper", True), (0.4, True), (3.0, True),
                                       ("hard", False), (3.5, False), (-0.1, False)])
def test_difficulty_levels_are_checked(tmp_path, value, ok):
    path = write_params(tmp_path, synth={"difficulty": {"segmentation": value, "classification": "easy"}})
    if ok:
        cfg = load_config(path)
        assert synth_level(cfg).segmentation == difficulty.resolve("segmentation", value)
    else:
        with pytest.raises(InputError, match="synth.difficulty.segmentation"):
            load_config(path)


def test_paper_is_read_from_the_calibration_file_and_recorded_in_the_receipt(tmp_path):
    from pathlib import Path

    paper = json.loads(Path(difficulty.__file__).with_name(difficulty.CALIBRATION_FILE).read_text())["levels"]["paper"]
    cfg = load_config(write_params(tmp_path, synth={"difficulty": {"segmentation": "paper", "classification": "paper"},
                                                    "counts": {"jsrt": {"nodule": 1, "non_nodule": 1}}},
                                   data={"datasets": ["jsrt"]}))
    assert dataclasses.asdict(synth_level(cfg)) == {k: float(v) for k, v in paper.items()}
    from multimix.data.acquire import acquire

    receipt = acquire(cfg, show_progress=False)
    assert receipt["config"]["synth"]["level"] == {k: float(v) for k, v in paper.items()}
    owners = json.loads((cfg.raw_dir / ".synthetic.json").read_text())
    assert owners["jsrt"]["settings"]["difficulty"] == {k: float(v) for k, v in paper.items()}


# ------------------------------------------------------------------ the truth sidecar and label noise
def test_label_noise_only_on_training_images_and_the_truth_kept_beside(tmp_path):
    counts = {"chex": {"train_normal": 60, "train_pneumonia": 60, "val_normal": 0, "val_pneumonia": 0,
                       "test_normal": 20, "test_pneumonia": 20}}
    cfg = load_config(write_params(tmp_path, data={"datasets": ["chex"]},
                                   synth={"counts": counts, "difficulty": {"segmentation": "easy",
                                                                           "classification": 1.0}}))
    synthesise(cfg, ["chex"], show_progress=False)
    root = cfg.raw_dir / "chex"
    with open(root / "phantom_lesions" / synth.TRUTH_FILE) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 160 and len(list(root.rglob("*.jpeg"))) == 160
    for row in rows:
        folder_label = int("/PNEUMONIA/" in row["file"])
        assert int(row["label"]) == folder_label
        assert int(row["flipped"]) == int(row["label"] != row["truth"])
        if "/test/" in row["file"]:
            assert row["flipped"] == "0"
        if row["truth"] == "1":
            assert row["pattern"] in phantom.PATTERNS and 0 < float(row["severity"]) <= 1
    flipped = [r for r in rows if r["flipped"] == "1"]
    assert flipped, "level 1 flips some training labels"
    # subtle pneumonias are the ones missed
    missed = [float(r["severity"]) for r in flipped if r["truth"] == "1"]
    kept = [float(r["severity"]) for r in rows if r["truth"] == "1" and r["flipped"] == "0"]
    assert missed and np.mean(missed) < np.mean(kept)
    # harmonise lists the sidecar as skipped, never as an image
    from multimix.data.harmonise import harmonise

    manifest, rejected, summaries = harmonise(cfg)
    assert len(manifest) == 160 and len(rejected) == 0
    lesions = len(list((root / "phantom_lesions").rglob("*.png")))
    assert summaries[0].skipped == lesions + 1  # the lesion masks and the truth table, counted


# ------------------------------------------------------------------ the gates, on paper phantoms
@pytest.fixture(scope="module")
def paper_project(tmp_path_factory):
    """Paper-level phantoms of the four MultiMix sources through harmonise and preprocess at 128."""
    folder = tmp_path_factory.mktemp("paper")
    counts = {"jsrt": {"nodule": 10, "non_nodule": 10}, "mcu": {"normal": 4, "tb": 4},
              "chex": {"train_normal": 0, "train_pneumonia": 0, "val_normal": 0, "val_pneumonia": 0,
                       "test_normal": 50, "test_pneumonia": 50},
              "nihx": {"pneumonia": 50, "no_finding": 50, "other": 0}}
    path = write_params(folder, data={"datasets": ["jsrt", "mcu", "chex", "nihx"], "nihx": {"normal_count": 50}},
                        synth={"counts": counts, "difficulty": {"segmentation": "paper", "classification": "paper"}},
                        harmonise={"workers": 2}, preprocess={"size": 128, "workers": 2,
                                                              "processed_dir": str(folder / "processed")})
    cfg = load_config(path)
    from multimix.data.harmonise import harmonise, write_outputs
    from multimix.data.preprocess import preprocess

    synthesise(cfg, show_progress=False)
    manifest, rejected, summaries = harmonise(cfg)
    write_outputs(cfg.interim_dir, manifest, rejected, summaries)
    preprocess(cfg)
    return cfg


def _processed(cfg, dataset):
    import h5py

    with h5py.File(cfg.processed_dir / f"{dataset}.h5", "r") as f:
        masks = f["masks"][:] if "masks" in f else None
        return f["images"][:], masks, f["labels"][:]


@pytest.mark.parametrize("dataset", ["jsrt", "mcu"])
def test_gate_no_threshold_segments_the_lungs(paper_project, dataset):
    images, masks, _ = _processed(paper_project, dataset)
    dice = [realism.threshold_dice(im, m[0] if m.ndim == 3 else m) for im, m in zip(images, masks)]
    assert np.mean(dice) <= 0.90, np.round(dice, 3)


@pytest.mark.parametrize("dataset", ["chex", "nihx"])
def test_gate_no_histogram_classifies_pneumonia(paper_project, dataset):
    images, _, labels = _processed(paper_project, dataset)
    assert realism.histogram_auc(images, labels) <= 0.75


def test_the_truth_sidecar_records_the_nuisances_the_writer_drew(paper_project):
    """`synth.nuisance_row` draws an image's nuisances without rendering it: exactly what the
    writer recorded for the files it wrote (CheX test normals are indices 0-49, pneumonias 50-99)."""
    with open(paper_project.raw_dir / "chex" / "phantom_lesions" / synth.TRUTH_FILE) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 100
    columns = realism.NUISANCE_COLUMNS
    written = sorted(tuple(float(r[c]) for c in columns) for r in rows)
    redrawn = []
    for i in range(100):
        _, severity, _ = synth.training_label(paper_project.synth.seed, "chex", i, i >= 50, PAPER, noisy=False)
        row = synth.nuisance_row("chex", paper_project.synth.seed, i, i >= 50, PAPER, severity=severity)
        redrawn.append(tuple(float(row[c]) for c in columns))
    assert sorted(redrawn) == written


@pytest.mark.parametrize("dataset", ["chex", "nihx"])
def test_gate_nuisances_alone_are_at_chance(dataset):
    """Over 1,000 images (so the gate has power: at 100 a null AUC ranges 0.35-0.7) the
    nuisances alone do not predict the label."""
    many = [dict(synth.nuisance_row(dataset, 77, i, i % 2 == 1, PAPER), label=i % 2) for i in range(1000)]
    assert realism.nuisance_auc(many) <= 0.56


def test_gates_see_the_easy_phantoms_as_easy():
    """The gates can fail: on easy phantoms a threshold segments and a histogram classifies."""
    dice, images, labels = [], [], []
    for i in range(6):
        drawn = synth._phantom("jsrt", 5, i, 1024, 1024, False, Level())
        dice.append(realism.threshold_dice(realism.training_view(drawn.image, 128),
                                           realism.mask_view(phantom.lung_mask(drawn.anatomy, 1024, 1024), 128)))
    for i in range(40):
        drawn = synth._phantom("nihx", 5, i, 512, 512, i % 2 == 1, Level())
        images.append(realism.training_view(drawn.image, 128))
        labels.append(i % 2)
    assert np.mean(dice) > 0.95
    assert realism.histogram_auc(images, labels) > 0.9


def test_radial_power_spectrum_slope_of_a_power_law_field():
    field = xray.power_law(np.random.default_rng(0), (256, 256), 3.0)
    assert realism.spectral_slope(field) == pytest.approx(3.0, abs=0.35)


def test_beyond_level_1_only_the_variability_widens():
    """Past the literature's end the physics stays (bone, vessels, scatter, dose, blur, transfer
    nuisances) and only what differs between patients grows: shapes, pose, lucency outside the mask."""
    one, three = difficulty.image_realism(1.0), difficulty.image_realism(3.0)
    for name in ("posterior_ribs", "rib_cortex", "vessels", "scatter", "photons", "detector_blur", "nuisances",
                 "lung_texture", "edge_power"):
        assert getattr(three, name) == getattr(one, name), name
    assert one.shape == 0 < three.shape and three.pose > one.pose and three.retrocardiac_air > one.retrocardiac_air

    def lungs(level):
        rng = np.random.default_rng(3)
        return [phantom.sample_anatomy(rng, pediatric=False, realism=difficulty.image_realism(level)).lung_rx[0]
                for _ in range(200)]

    assert np.std(lungs(3.0)) > 3 * np.std(lungs(1.0))
    assert lungs(0.0) == lungs(0.5) == lungs(1.0)  # the same patient's lungs at every level up to 1

    def profiles(level):
        rng = np.random.default_rng(4)
        return [phantom.sample_anatomy(rng, pediatric=False, realism=difficulty.image_realism(level)).lung_profile
                for _ in range(200)]

    assert set(profiles(1.0)) == {1.0}
    assert 0.35 < np.std(np.log(profiles(2.0))) < 0.65 and 0.8 < np.std(np.log(profiles(3.0))) < 1.2


def test_the_widening_past_level_1_reaches_only_the_lung_segmentation_sources():
    """Past level 1 the segmentation knob is a calibration device for lung masks from few labels:
    JSRT, Montgomery and Shenzhen change, CheX, NIHX and CheXpert are written as at level 1."""
    from multimix.data import acquisition

    one, beyond = Level(1.0, 0.5), Level(2.5, 0.5)
    for dataset, source in acquisition.SOURCES.items():
        assert (beyond.image_for(dataset).level > 1.0) == source.lung_segmentation, dataset
        assert one.image_for(dataset) == difficulty.image_realism(1.0)
    assert {d for d, s in acquisition.SOURCES.items() if s.lung_segmentation} == {"jsrt", "mcu", "shenzhen"}
    for dataset, changes in (("nihx", False), ("mcu", True)):
        at_one = synth._phantom(dataset, 2, 9, 256, 256, True if dataset == "nihx" else False, one).image
        past = synth._phantom(dataset, 2, 9, 256, 256, True if dataset == "nihx" else False, beyond).image
        assert (not np.array_equal(at_one, past)) == changes, dataset
    a, _ = synth_chexseg.patient(1, "val", 3, 1.2, one)
    b, _ = synth_chexseg.patient(1, "val", 3, 1.2, beyond)
    assert a == b


def test_calibration_fit_and_choice():
    from multimix import calibration

    fitted = calibration.isotonic_fit([0.25, 0.5, 0.75, 1.0], [0.9, 0.8, 0.82, 0.6])
    assert list(np.round(fitted, 3)) == [0.9, 0.81, 0.81, 0.6]
    assert calibration.choose_level([0.25, 0.5, 0.75, 1.0], fitted, 0.7) == pytest.approx(0.75 + 0.11 / 0.21 * 0.25)
    assert calibration.choose_level([0.25, 0.5], [0.9, 0.8], 0.7) is None
    assert calibration.choose_level([0.25, 0.5], [0.6, 0.5], 0.7) is None


def test_calibration_projects_use_the_calibration_seed_and_one_baseline(tmp_path):
    from multimix import calibration
    from multimix.study import run_names

    from pathlib import Path

    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    for task, (preset, dataset, labels) in calibration.BASELINE.items():
        params = calibration.project_params(base, task, {"segmentation": 0.5, "classification": 0.25},
                                            tmp_path / task, (0, 1, 2))
        path = tmp_path / f"{task}.yaml"
        path.write_text(yaml.safe_dump(params))
        cfg = load_config(path)
        assert cfg.synth.seed == calibration.CALIBRATION_SEED != base["synth"]["seed"]
        assert cfg.data.datasets == (dataset,)
        assert run_names(cfg) == [f"{preset}-{'s' if task == 'segmentation' else 'c'}{labels}-r{r}" for r in (0, 1, 2)]
        assert (cfg.train.epochs, cfg.train.steps_per_epoch, cfg.preprocess.size) == (
            base["train"]["epochs"], base["train"]["steps_per_epoch"], base["preprocess"]["size"])
        head = calibration.project_params(base, task, {"segmentation": 0.5, "classification": 0.25},
                                          tmp_path / task, (0,), headroom=True)
        assert head["train"]["epochs"] == base["train"]["epochs"] * calibration.HEADROOM_BUDGET


def test_calibration_reuses_a_project_only_while_its_phantoms_are_the_same_bytes(tmp_path, monkeypatch):
    """A killed calibration resumes from its finished projects, but a change of the phantom code
    that moves pixels must not reuse results measured on the old phantoms."""
    from multimix import calibration
    from multimix.training import loop

    from projects import tiny_params

    monkeypatch.setitem(calibration.COUNTS, "segmentation", {"jsrt": {"nodule": 12, "non_nodule": 12}})
    base = tiny_params()
    folder = tmp_path / "point"
    params = calibration.project_params(base, "segmentation", {"segmentation": 0.0, "classification": 0.0},
                                        folder, (0,))
    trained = []
    real_train = loop.train
    monkeypatch.setattr(loop, "train", lambda *a, **k: trained.append(a[1]) or real_train(*a, **k))
    first = calibration.run_project(params, folder, log=lambda m: None)
    assert trained == ["unet-s10-r0"] and set(first[0]) >= {"dice", "best_epoch", "steps"}

    monkeypatch.setattr(synth, "VERSION", synth.VERSION + 1)  # the phantoms are written again: same bytes
    assert calibration.run_project(params, folder, log=lambda m: None) == first and len(trained) == 1

    real_expose = xray.expose
    monkeypatch.setattr(synth, "VERSION", synth.VERSION + 2)
    monkeypatch.setattr(xray, "expose", lambda *a, **k: real_expose(*a, **k) + np.float32(0.05))  # pixels move
    calibration.run_project(params, folder, log=lambda m: None)
    assert len(trained) == 2

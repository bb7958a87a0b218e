"""ARP policy: action tokens, configs, preprocessing, augmentation, CCT masking, training and inference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mirror_policy.arp.action_tokens import (
    action_to_labels,
    canonical_quaternion,
    labels_to_action,
    matrix_to_euler_xyz,
    quaternion_angle_deg,
    quaternion_to_matrix,
    quaternion_to_rotation_bins,
    rotation_bins_to_quaternion,
)
from mirror_policy.arp.augmentation import augment_batch, rgb_noise, se3_augment
from mirror_policy.arp.configuration import PERACT_SCENE_BOUNDS, ARPConfig, ARPConfigError, named_config
from mirror_policy.arp.modeling import ARPPolicy
from mirror_policy.arp.preprocessing import PolicyInputError, make_batch, observation_to_sample, time_feature
from mirror_policy.arp.renderer import CubeFrame, gaussian_heatmaps, lift_heatmaps, project
from sim_bridge.cameras import CAMERA_NAMES, RLBENCH_CAMERAS, look_at_extrinsics, tip_camera_extrinsics
from sim_bridge.errors import InvalidActionError
from sim_bridge.observation import CameraFrame, Observation

TIP_POSE = np.array([0.3, 0.0, 1.2, 1.0, 0.0, 0.0, 0.0])  # gripper pointing down


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- helpers
def random_batch(config: ARPConfig, batch: int, points: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = torch.tensor(config.scene_bounds)
    lo, hi = b[:3], b[3:]
    pts = lo - 0.1 * (hi - lo) + torch.rand(batch, points, 3, generator=g) * 1.2 * (hi - lo)
    quat = torch.randn(batch, 4, generator=g)
    action = torch.cat(
        [
            lo + torch.rand(batch, 3, generator=g) * (hi - lo),
            quat / quat.norm(dim=-1, keepdim=True),
            torch.randint(0, 2, (batch, 2), generator=g).float(),
        ],
        dim=-1,
    )
    return {
        "points": pts,
        "rgb": torch.rand(batch, points, 3, generator=g),
        "low_dim_state": torch.randn(batch, config.proprio_dim, generator=g),
        "lang": torch.randn(batch, 6, config.lang_dim, generator=g),
        "lang_mask": torch.tensor([[True] * 6, [True] * 4 + [False] * 2] * batch)[:batch],
        "action": action,
    }


def camera_frame(name: str, size: int = 128, depth_m: float = 1.0) -> CameraFrame:
    spec = RLBENCH_CAMERAS[name]
    if spec.mounted_on_tip:
        tip = np.eye(4)
        tip[:3, :3] = Rotation.from_quat(TIP_POSE[3:]).as_matrix()
        tip[:3, 3] = TIP_POSE[:3]
        extrinsics = tip_camera_extrinsics(spec, tip)
    else:
        extrinsics = look_at_extrinsics(np.array(spec.position), np.array(spec.axis))
    rng = np.random.default_rng(0)
    return CameraFrame(
        rgb=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        depth=np.full((size, size), depth_m, dtype=np.float32),
        mask=np.zeros((size, size), dtype=np.int32),
        intrinsics=spec.intrinsics(size),
        extrinsics=extrinsics,
        near=spec.near,
        far=spec.far,
    )


def observation(cameras: dict[str, CameraFrame]) -> Observation:
    return Observation(
        cameras=cameras,
        joint_positions=np.zeros(7),
        joint_velocities=np.zeros(7),
        joint_forces=np.zeros(7),
        gripper_open=1.0,
        gripper_pose=TIP_POSE,
        gripper_joint_positions=np.array([0.035, 0.05]),
        gripper_touch_forces=np.zeros(6),
        task_low_dim_state=np.zeros(3),
    )


# --------------------------------------------------------------------------- config
def test_named_configs_and_json_round_trip() -> None:
    tiny, paper = named_config("cpu_tiny"), named_config("paper")
    assert (paper.cross_layers + paper.self_layers, paper.embed_dim, paper.mlp_dim) == (8, 128, 512)
    assert (paper.img_size, paper.rotation_bins, paper.rotation_resolution_deg) == (224, 72, 5.0)
    assert paper.scene_bounds == PERACT_SCENE_BOUNDS and paper.cameras == CAMERA_NAMES
    assert tiny.img_size < paper.img_size and tiny.tokens_per_side == 8
    for cfg in (tiny, paper):
        assert ARPConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ARPConfigError):
        named_config("huge")
    with pytest.raises(ARPConfigError, match="unknown ARPConfig field"):
        ARPConfig.from_dict({**tiny.to_dict(), "layers": 3})
    with pytest.raises(ARPConfigError, match="img_patch_size"):
        tiny.replace(img_size=65)
    with pytest.raises(ARPConfigError, match="unknown cameras"):
        tiny.replace(cameras=("front", "ceiling"))
    with pytest.raises(ValueError):
        tiny.replace(scene_bounds=(0.0, 0.0, 0.0, -1.0, 1.0, 1.0))


# --------------------------------------------------------------------------- action tokens
def test_rotation_tokens_round_trip_within_bin_resolution() -> None:
    q = canonical_quaternion(torch.randn(2000, 4, generator=torch.Generator().manual_seed(0)).double())
    assert bool((q[:, 3] >= 0).all())
    euler = matrix_to_euler_xyz(quaternion_to_matrix(q))
    np.testing.assert_allclose(euler.numpy(), Rotation.from_quat(q.numpy()).as_euler("xyz"), atol=1e-9)
    bins = quaternion_to_rotation_bins(q, 72)
    assert bins.min() >= 0 and bins.max() < 72
    back = rotation_bins_to_quaternion(bins, 72)
    np.testing.assert_allclose(back.norm(dim=-1).numpy(), 1.0, atol=1e-12)
    err = quaternion_angle_deg(q, back)
    # at most 2.5 deg per Euler angle; by the triangle inequality at most 7.5 deg overall
    assert float(torch.quantile(err, 0.99)) <= 5.0 and float(err.max()) <= 7.5
    # -q is the same rotation and must get the same label
    assert torch.equal(quaternion_to_rotation_bins(-q, 72), bins)
    # exact bin centres come back exactly
    centres = torch.randint(0, 72, (100, 3), generator=torch.Generator().manual_seed(1))
    centres[:, 1] = centres[:, 1].clamp(19, 53)  # pitch within (-90, 90) deg: a unique decomposition
    assert torch.equal(quaternion_to_rotation_bins(rotation_bins_to_quaternion(centres, 72), 72), centres)


def test_gimbal_lock_gets_a_consistent_label() -> None:
    q = torch.tensor(Rotation.from_euler("xyz", [[30, 90, 20], [10, -90, -40]], degrees=True).as_quat())
    bins = quaternion_to_rotation_bins(q, 72)
    assert bins[:, 2].tolist() == [36, 36]  # yaw fixed to 0 deg (bin 36), roll absorbs the rest
    assert float(quaternion_angle_deg(q, rotation_bins_to_quaternion(bins, 72)).max()) < 1e-6


def test_action_labels_round_trip() -> None:
    action = torch.tensor([[0.1, -0.2, 0.9, 0.0, 0.0, -0.7071068, -0.7071068, 0.8, 0.2]])
    labels = action_to_labels(action, 72)
    assert labels.gripper_open.tolist() == [1] and labels.ignore_collisions.tolist() == [0]
    assert labels.quaternion[0, 3] > 0  # canonicalised: qw >= 0
    vec = labels_to_action(
        labels.position, labels.rotation_bins, labels.gripper_open, labels.ignore_collisions, 72
    )
    assert vec.shape == (1, 9)
    torch.testing.assert_close(vec[:, :3], action[:, :3])
    assert float(quaternion_angle_deg(vec[:, 3:7].double(), action[:, 3:7].double())[0]) < 5.0
    assert vec[0, 7:].tolist() == [1.0, 0.0]


def test_position_round_trip_through_both_heatmap_stages() -> None:
    cfg = ARPConfig.cpu_tiny()
    g = torch.Generator().manual_seed(2)
    b = torch.tensor(cfg.scene_bounds)
    target = b[:3] + torch.rand(64, 3, generator=g) * (b[3:] - b[:3])
    coarse = CubeFrame.from_bounds(cfg.scene_bounds, 64)
    pix, _ = project(coarse.to_cube(target), cfg.img_size)
    first = coarse.to_world(lift_heatmaps(gaussian_heatmaps(pix, cfg.img_size, cfg.heatmap_sigma_px)))
    fine = coarse.zoom(first, cfg.zoom_factor)
    pix, _ = project(fine.to_cube(target), cfg.img_size)
    second = fine.to_world(lift_heatmaps(gaussian_heatmaps(pix, cfg.img_size, cfg.heatmap_sigma_px)))
    fine_pixel_m = 1.0 / cfg.img_size / cfg.zoom_factor
    assert float((second - target).abs().max()) <= fine_pixel_m


def test_bad_actions_are_refused() -> None:
    good = torch.tensor([[0.1, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    for bad in (
        good[:, :8],
        good.clone().fill_(float("nan")),
        torch.cat([good[:, :3], torch.zeros(1, 6)], -1),
    ):
        with pytest.raises(InvalidActionError):
            action_to_labels(bad, 72)


# --------------------------------------------------------------------------- preprocessing / augmentation
def test_observation_to_sample_layout() -> None:
    cfg = ARPConfig.cpu_tiny()  # point_stride 2
    cams = {name: camera_frame(name) for name in CAMERA_NAMES}
    sample = observation_to_sample(observation(cams), cfg, step=0)
    assert sample["points"].shape == (4 * 64 * 64, 3) and sample["rgb"].shape == (4 * 64 * 64, 3)
    expected = np.concatenate([cams[n].point_cloud()[::2, ::2].reshape(-1, 3) for n in cfg.cameras])
    np.testing.assert_allclose(sample["points"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(sample["rgb"][:3].numpy(), cams["front"].rgb[0, :6:2] / 255.0, atol=1e-6)
    # [gripper_open, finger_1, finger_2 clipped to 0.04, time]
    np.testing.assert_allclose(sample["low_dim_state"].numpy(), [1.0, 0.035, 0.04, 1.0], atol=1e-6)
    assert time_feature(24) == -1.0 and time_feature(12) == 0.0


def test_bad_observations_are_refused_with_clear_errors() -> None:
    cfg = ARPConfig.cpu_tiny()
    cams = {name: camera_frame(name) for name in CAMERA_NAMES if name != "wrist"}
    with pytest.raises(PolicyInputError, match="lacks cameras \\['wrist'\\]"):
        observation_to_sample(observation(cams), cfg, step=0)
    small = {name: camera_frame(name, size=64) for name in CAMERA_NAMES}
    with pytest.raises(ValueError, match="RGB must be \\(128, 128, 3\\)"):
        observation_to_sample(observation(small), cfg, step=0)
    bad_depth = {name: camera_frame(name) for name in CAMERA_NAMES}
    bad_depth["front"].depth = np.zeros((128, 127), dtype=np.float32)
    with pytest.raises(PolicyInputError, match="depth must be"):
        observation_to_sample(observation(bad_depth), cfg, step=0)
    good = {name: camera_frame(name) for name in CAMERA_NAMES}
    with pytest.raises(PolicyInputError, match="keyframe step"):
        observation_to_sample(observation(good), cfg, step=25)
    with pytest.raises(PolicyInputError, match="lang must be"):
        make_batch([observation(good)], cfg, torch.zeros(1, 4, 100), torch.ones(1, 4, dtype=torch.bool), [0])


def test_model_refuses_malformed_batches() -> None:
    cfg = ARPConfig.cpu_tiny()
    policy = ARPPolicy(cfg)
    batch = random_batch(cfg, 2, 200)
    for key, value, message in [
        ("lang", None, "lacks keys"),
        ("low_dim_state", torch.zeros(2, 3), "low_dim_state must be"),
        ("lang_mask", torch.ones(2, 5, dtype=torch.bool), "lang_mask must be"),
        ("rgb", torch.zeros(2, 199, 3), "rgb must match"),
        ("points", torch.zeros(2, 200), "points must be"),
    ]:
        bad = dict(batch)
        if value is None:
            del bad[key]
        else:
            bad[key] = value
        with pytest.raises(PolicyInputError, match=message):
            policy(bad)
    with pytest.raises(PolicyInputError, match="lacks keys \\['action'\\]"):
        policy({k: v for k, v in batch.items() if k != "action"})
    bad_action = dict(batch, action=batch["action"].clone())
    bad_action["action"][0, 3:7] = 0.0
    with pytest.raises(InvalidActionError):
        policy(bad_action)


def test_se3_augmentation_moves_scene_and_target_together() -> None:
    cfg = ARPConfig.cpu_tiny()
    batch = random_batch(cfg, 4, 300, seed=3)
    # a point rigidly attached to the target gripper frame, 10 cm along its z axis
    q = batch["action"][:, 3:7]
    attached = batch["action"][:, :3] + (quaternion_to_matrix(q) @ torch.tensor([0.0, 0.0, 0.1]))
    batch["points"][:, 0] = attached
    original = {k: v.clone() for k, v in batch.items()}
    out = augment_batch(batch, cfg, torch.Generator().manual_seed(4))
    for k in original:  # the input batch is left untouched
        assert torch.equal(batch[k], original[k])
    new_q, new_pos = out["action"][:, 3:7], out["action"][:, :3]
    assert bool((new_q[:, 3] >= 0).all())
    expected = new_pos + quaternion_to_matrix(new_q) @ torch.tensor([0.0, 0.0, 0.1])
    torch.testing.assert_close(out["points"][:, 0], expected, atol=1e-5, rtol=0)

    # rigid: pairwise distances preserved; target stays inside the bounds; shift within +-12.5 cm
    def pairwise(p: torch.Tensor) -> torch.Tensor:
        return (p[:, :50, None] - p[:, None, :50]).norm(dim=-1)

    torch.testing.assert_close(pairwise(out["points"]), pairwise(batch["points"]), atol=1e-5, rtol=0)
    b = torch.tensor(cfg.scene_bounds)
    assert bool(((new_pos >= b[:3] - 1e-6) & (new_pos <= b[3:] + 1e-6)).all())
    assert float((new_pos - batch["action"][:, :3]).abs().max()) <= 0.125 + 1e-6
    # only yaw changes: the gripper z axis keeps its angle to the world z axis
    z_old = quaternion_to_matrix(q)[:, 2, 2]
    torch.testing.assert_close(quaternion_to_matrix(new_q)[:, 2, 2], z_old, atol=1e-5, rtol=0)
    # colour noise is bounded
    assert float((out["rgb"] - batch["rgb"]).abs().max()) <= cfg.aug_rgb_noise + 1e-6
    assert float(rgb_noise(torch.ones(1, 10, 3), 0.05).max()) <= 1.0
    with pytest.raises(InvalidActionError):
        se3_augment(batch["points"], batch["action"][:, :8], cfg.scene_bounds, 0.1, 10.0)


# --------------------------------------------------------------------------- the chunking causal transformer
def test_decoding_matches_teacher_forcing_and_respects_dependencies() -> None:
    torch.manual_seed(0)
    cct = ARPPolicy(ARPConfig.cpu_tiny()).cct.eval()
    prompt = torch.randn(3, 6, cct.final_norm.normalized_shape[0])
    with torch.no_grad():
        bins, grip, collision, hat = cct.decode(prompt)
        forced = cct.teacher_forced(prompt, bins)
        torch.testing.assert_close(forced, hat, atol=1e-5, rtol=1e-5)
        rot_logits, grip_logits, collision_logits = cct.action_heads(forced)
        assert torch.equal(rot_logits.argmax(-1), bins) and torch.equal(grip_logits.argmax(-1), grip)
        assert torch.equal(collision_logits.argmax(-1), collision)
        other = cct.teacher_forced(prompt, (bins + 7) % 72)
    # rot-x sees only the prompt; the gripper chunk may not see the rotation tokens
    torch.testing.assert_close(other[:, 0], forced[:, 0])
    torch.testing.assert_close(other[:, 3:], forced[:, 3:])
    assert not torch.allclose(other[:, 1], forced[:, 1])  # rot-y depends on rot-x


# --------------------------------------------------------------------------- the policy
@pytest.mark.parametrize("language_film", [False, True])
def test_cpu_tiny_forward_backward_gives_finite_loss_and_gradients_everywhere(language_film: bool) -> None:
    torch.manual_seed(0)
    cfg = ARPConfig.cpu_tiny().replace(language_film=language_film)
    policy = ARPPolicy(cfg)
    batch = random_batch(cfg, 2, 2000)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    for step in range(2):  # AdaLN modulations start at zero: after one update every parameter gets gradient
        opt.zero_grad()
        loss, info = policy(batch)
        assert torch.isfinite(loss)
        loss.backward()
        if step == 0:
            opt.step()
    expected = {"stage1_heatmap", "stage2_heatmap", "rot_x", "rot_y", "rot_z", "grip", "collision", "total"}
    assert {k[5:] for k in info if k.startswith("loss/")} == expected
    assert math.isclose(
        float(info["loss/total"]), sum(float(info[f"loss/{k}"]) for k in expected - {"total"}), rel_tol=1e-5
    )
    assert info["e"].shape == (2, cfg.embed_dim) and info["e"].requires_grad
    for name, p in policy.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().max()) > 0, name


def test_language_film_starts_as_the_identity_and_then_reaches_the_per_view_layers() -> None:
    torch.manual_seed(0)
    cfg = ARPConfig.cpu_tiny()
    plain = ARPPolicy(cfg).eval()
    film = ARPPolicy(cfg.replace(language_film=True)).eval()
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".film." in k for k in missing)
    batch = random_batch(cfg, 2, 2000)
    for a, b in zip(plain.predict_action(batch), film.predict_action(batch), strict=True):
        torch.testing.assert_close(a, b)  # a fine-tune from a checkpoint without FiLM starts where it was

    def view_layer_output(policy: ARPPolicy, lang: torch.Tensor) -> torch.Tensor:
        seen = []
        hook = policy.mvt_coarse.view_layers[0].register_forward_hook(lambda m, i, o: seen.append(o))
        try:
            with torch.no_grad():
                policy.mvt_coarse(policy._views(*views), batch["low_dim_state"], lang, batch["lang_mask"])
        finally:
            hook.remove()
        return seen[0]

    frame = CubeFrame.from_bounds(cfg.scene_bounds, 2, torch.device("cpu"))
    views = (frame, batch["points"], batch["rgb"], torch.ones(batch["points"].shape[:2], dtype=torch.bool))
    other = batch["lang"].flip(0)
    with torch.no_grad():
        film.mvt_coarse.film.proj.weight.normal_(0.0, 0.05)  # as after training
    # without FiLM the per-view layers never see the instruction; with it they do
    torch.testing.assert_close(view_layer_output(plain, batch["lang"]), view_layer_output(plain, other))
    assert not torch.allclose(view_layer_output(film, batch["lang"]), view_layer_output(film, other))


def test_overfits_one_sample_and_recovers_the_action() -> None:
    torch.manual_seed(0)
    cfg = ARPConfig.cpu_tiny().replace(dropout=0.0, mvt_attn_dropout=0.0, stage2_center_noise=0.0)
    policy = ARPPolicy(cfg)
    g = torch.Generator().manual_seed(1)
    table = torch.stack(
        [torch.rand(1500, generator=g) - 0.3, torch.rand(1500, generator=g) - 0.5, torch.full((1500,), 0.75)],
        -1,
    )
    box = torch.tensor([0.25, 0.1, 0.80]) + (torch.rand(500, 3, generator=g) - 0.5) * 0.1
    quat = Rotation.from_euler("xyz", [175.0, -20.0, 90.0], degrees=True).as_quat()
    action = torch.tensor([[0.25, 0.1, 0.86, *quat, 0.0, 1.0]], dtype=torch.float32)
    batch = {
        "points": torch.cat([table, box])[None],
        "rgb": torch.cat([torch.full((1500, 3), 0.5), torch.tensor([[0.9, 0.1, 0.1]]).expand(500, 3)])[None],
        "low_dim_state": torch.tensor([[1.0, 0.04, 0.04, 1.0]]),
        "lang": torch.randn(1, 5, cfg.lang_dim, generator=g),
        "lang_mask": torch.ones(1, 5, dtype=torch.bool),
        "action": action,
    }
    opt = torch.optim.AdamW(policy.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss, _ = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # The floor is the entropy of the two Gaussian heatmap targets (about 2 x 3.6); start is about 31.
    assert losses[-1] < 0.35 * losses[0], losses[::10]
    predicted, e = policy.predict_action(batch)
    assert policy.training  # predict_action restores the mode
    assert predicted.shape == (1, 9) and e.shape == (1, cfg.embed_dim)
    assert float((predicted[0, :3] - action[0, :3]).norm()) < 0.03
    assert float(quaternion_angle_deg(predicted[:, 3:7].double(), action[:, 3:7].double())[0]) < 5.0
    assert predicted[0, 7:].tolist() == [0.0, 1.0]
    # predict: the same keyframe, and the coarse point it refined, on the target to within a coarse pixel or
    # two, with the keyframe inside the fine stage's cube around it
    prediction = policy.predict(batch)
    assert torch.equal(prediction.action, predicted) and torch.equal(prediction.e, e)
    half_fine = (cfg.scene_bounds[3] - cfg.scene_bounds[0]) / 2 / cfg.zoom_factor
    assert float((prediction.coarse_position - predicted[:, :3]).abs().max()) <= half_fine
    assert float((prediction.coarse_position[0] - action[0, :3]).norm()) < 0.06
    fused = policy.predict(batch, coarse_prior=1.0)  # the fine stage is sure here: the same keyframe, near
    assert float((fused.action[0, :3] - predicted[0, :3]).norm()) < 0.01
    assert torch.equal(fused.coarse_position, prediction.coarse_position)
    with pytest.raises(ValueError, match="coarse_prior"):
        policy.predict(batch, coarse_prior=-1.0)


def test_paper_config_builds_and_runs_one_forward_pass() -> None:
    torch.manual_seed(0)
    cfg = ARPConfig.paper()
    policy = ARPPolicy(cfg).eval()
    n_params = sum(p.numel() for p in policy.parameters())
    assert 70e6 < n_params < 75e6  # ARP: 71.9 M reported by the authors' profile
    batch = random_batch(cfg, 1, len(cfg.cameras) * 128 * 128)
    with torch.no_grad():
        loss, info = policy(batch)
    assert torch.isfinite(loss) and info["e"].shape == (1, 128)


# ------------------------------------------------------------------------------------------------ golden
def test_golden_outputs_of_seeded_cpu_tiny_policy(golden) -> None:
    """Seeded init + seeded scenes -> the stored losses, embeddings and decoded keyframes (regenerate with
    test/golden/make_golden.py only after a deliberate change of the architecture)."""
    stored, current = golden("arp")
    assert set(stored) == set(current)
    assert torch.allclose(stored["input_checksum"], current["input_checksum"], rtol=0, atol=1e-9), (
        "seeded input changed (torch RNG?)"
    )
    assert torch.allclose(stored["param_checksum"], current["param_checksum"], rtol=1e-9, atol=1e-6), (
        "seeded cpu_tiny initialisation changed"
    )
    for key in ("loss_terms", "teacher_forced_e", "predicted_actions", "predicted_e"):
        drift = (stored[key] - current[key]).abs().max().item()
        assert drift <= 1e-4, f"ARP {key} drifted from the golden file by {drift:.3e}"

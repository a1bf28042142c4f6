"""Stage `label`: person masks and 16 MPII joints per frame from BlazePose heavy, on the detect stage's boxes.

Per box scoring >= CROP_SCORE (0.25): a square crop 1.35x the box's longer side around its centre, resized to
256x256 (RGB/255), through `pose_landmark_heavy.tflite` (ai-edge-litert). The crop is kept only if the pose presence
flag is > 0.5 and the skeleton is person-sized: the shoulder-to-hip distance is at least TORSO_MIN (0.18) of the
crop side. A person's torso spans 0.19-0.27 of a 1.35x crop; the presence flag alone accepted vtest's traffic cones
and the blue sign by the lawn (presence up to 1.0) with skeletons collapsed into a few pixels (torso 0.01-0.17 of
the crop). Kept crops give a person-probability map (sigmoid of the mask logits) pasted back into the frame with a
per-pixel max, and 33 landmarks mapped to the 16 MPII joints.

Label rule (labels/STEM.png, uint8; 0 background, 1 person, 255 ignore):
- 1 where the merged person probability P >= 0.7; 0 where P < 0.3 (and everywhere no kept crop reaches: areas and
  whole frames without people are real negatives); 255 where 0.3 <= P < 0.7 (the teacher is unsure).
- 255 on a thin band around each person: the pixels within BAND_PX of the P = 0.5 outline (the frame-rate video
  is blurry and JPEG-smeared there, and the crop's 256 px mask resampled into the frame is soft there).
- 255 inside a cropped box BlazePose rejects where the teachers disagree: the detector is confident (score >=
  DISAGREE_SCORE, 0.5), or BlazePose drew a person-sized skeleton there but a low presence (a pedestrian half
  hidden by vtest's sign: score 0.4, presence 0.002, torso 0.20), or a high presence but a short torso between
  COLLAPSED_TORSO (0.1) and TORSO_MIN (a man behind the sign in a group of three: presence 1.0, torso 0.177).
  Boxes both lean against (torso < 0.1, or low presence and torso < TORSO_MIN: cones, rocks, the sign) stay
  background: they are the hard negatives. Person pixels (P >= 0.7) from other crops inside such a box stay 1.
- 255 inside each weak box (detector score in [0.1, CROP_SCORE)) that is shaped like a standing person (width
  0.2-0.75 of its height) and overlaps no cropped box (IoU <= 0.5): the detector half-sees someone there whom
  nobody checked (dark-clothed pedestrians beside vtest's sign: score 0.15-0.24, width 0.22-0.31 of the height).
  Without the shape test, weak boxes blanked out whole blurred car fronts in bikes and drew pole-thin strips.

Joints (labels/STEM.json): BlazePose -> MPII 0<-28, 1<-26, 2<-24, 3<-23, 4<-25, 5<-27, 6 (pelvis) <- mid(23, 24),
7 (thorax) <- mid(11, 12), 10<-16, 11<-14, 12<-12, 13<-11, 14<-13, 15<-15. MPII's upper neck and head top have
no BlazePose landmark; with E = mid(ears 7, 8) and T = thorax: upper_neck = T + 0.55 (E - T) (the chin lies a
little over halfway from the shoulder line to the ears) and head_top = E + 0.6 (E - T) (the skull's top is about
0.6 of the shoulder-to-ear height above the ears). A joint's visibility v is 1 when BlazePose's visibility and
presence (sigmoids) are both >= 0.5 for its landmark(s) (all of them for a midpoint; for the two head joints the
shoulders and at least one of nose/left ear/right ear) and it lies inside the frame, else 0 (coordinates are
kept; v = 0 means "do not train on it"). The head box is a square centred between upper neck and head top with
side |head_top - upper_neck| (its 0.6 x diagonal is PCKh's head size). Two kept crops whose shoulder and hip
midpoints both lie within 0.25 torso lengths are one person: the crop with the higher presence stays.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from common import DETECTIONS, FRAMES, LABELS, WORK, stems_to_do, write_json

CROP_SIZE = 256
CROP_ENLARGE = 1.35
CROP_SCORE = 0.25
PRESENCE_MIN = 0.5
TORSO_MIN = 0.18
COLLAPSED_TORSO = 0.1
PERSON_P = 0.7
BACKGROUND_P = 0.3
OUTLINE_P = 0.5
BAND_PX = 1
DISAGREE_SCORE = 0.5
WEAK_OVERLAP_IOU = 0.5
WEAK_ASPECT = (0.2, 0.75)  # width / height of a standing person's box
VISIBLE_MIN = 0.5
DUPLICATE_TORSO_FRACTION = 0.25
IGNORE = 255

# MPII joint index -> BlazePose landmark(s) averaged; 8 and 9 are derived from the head (see the docstring).
MPII_FROM_BLAZEPOSE = {0: (28,), 1: (26,), 2: (24,), 3: (23,), 4: (25,), 5: (27,), 6: (23, 24), 7: (11, 12),
                       10: (16,), 11: (14,), 12: (12,), 13: (11,), 14: (13,), 15: (15,)}
UPPER_NECK, HEAD_TOP = 8, 9
NOSE, LEFT_EAR, RIGHT_EAR, LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP = 0, 7, 8, 11, 12, 23, 24
NECK_FRACTION = 0.55
HEAD_TOP_FRACTION = 0.6


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


class BlazePose:
    """pose_landmark_heavy.tflite on 256x256 RGB crops: landmarks (crop pixels), presence, person probability."""

    def __init__(self, model_path: Path):
        from ai_edge_litert.interpreter import Interpreter

        if not model_path.is_file():
            raise SystemExit(f"{model_path} is missing: run the fetch stage first")
        self.interpreter = Interpreter(model_path=str(model_path), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        self.landmarks_index = outputs["Identity"]
        self.presence_index = outputs["Identity_1"]
        self.mask_index = outputs["Identity_2"]

    def __call__(self, crop_rgb: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """crop_rgb: 256x256x3 uint8. Returns landmarks 33x4 (x, y, visibility, presence as probabilities),
        the pose presence flag and the 256x256 person probability."""
        self.interpreter.set_tensor(self.input_index, (crop_rgb.astype(np.float32) / 255.0)[None])
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.landmarks_index).reshape(39, 5)[:33]
        landmarks = np.stack([raw[:, 0], raw[:, 1], sigmoid(raw[:, 3]), sigmoid(raw[:, 4])], axis=1)
        presence = float(self.interpreter.get_tensor(self.presence_index).reshape(-1)[0])
        probability = sigmoid(self.interpreter.get_tensor(self.mask_index)[0, :, :, 0])
        return landmarks, presence, probability


def square_crop(box: list[float]) -> tuple[int, int, int]:
    """(x0, y0, side) in integer frame pixels: the square CROP_ENLARGE x the box's longer side around its centre."""
    x1, y1, x2, y2 = box[:4]
    side = max(8, int(round(CROP_ENLARGE * max(x2 - x1, y2 - y1))))
    x0 = int(round((x1 + x2) / 2 - side / 2))
    y0 = int(round((y1 + y2) / 2 - side / 2))
    return x0, y0, side


def cut(frame: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The square [x0, x0+side) x [y0, y0+side) of the frame at CROP_SIZE, black where it leaves the frame."""
    height, width = frame.shape[:2]
    square = np.zeros((side, side, 3), np.uint8)
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    square[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = frame[fy0:fy1, fx0:fx1]
    interpolation = cv2.INTER_AREA if side > CROP_SIZE else cv2.INTER_LINEAR
    return cv2.resize(square, (CROP_SIZE, CROP_SIZE), interpolation=interpolation)


def paste_max(target: np.ndarray, probability: np.ndarray, x0: int, y0: int, side: int) -> None:
    """Resample a crop's CROP_SIZE probability map to the crop's frame size and max it into target."""
    height, width = target.shape
    interpolation = cv2.INTER_AREA if side < CROP_SIZE else cv2.INTER_LINEAR
    scaled = cv2.resize(probability.astype(np.float32), (side, side), interpolation=interpolation)
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    region = target[fy0:fy1, fx0:fx1]
    np.maximum(region, scaled[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0], out=region)


def mpii_joints(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """16x3 MPII joints (x, y, v) in frame pixels from 33 BlazePose landmarks (x, y, visibility, presence)."""
    xy = landmarks[:, :2]
    seen = (landmarks[:, 2] >= VISIBLE_MIN) & (landmarks[:, 3] >= VISIBLE_MIN)
    joints = np.zeros((16, 3))
    for joint, sources in MPII_FROM_BLAZEPOSE.items():
        joints[joint, :2] = xy[list(sources)].mean(axis=0)
        joints[joint, 2] = float(seen[list(sources)].all())
    thorax = joints[7, :2]
    ears = xy[[LEFT_EAR, RIGHT_EAR]].mean(axis=0)
    joints[UPPER_NECK, :2] = thorax + NECK_FRACTION * (ears - thorax)
    joints[HEAD_TOP, :2] = ears + HEAD_TOP_FRACTION * (ears - thorax)
    head_seen = float(seen[[LEFT_SHOULDER, RIGHT_SHOULDER]].all() and seen[[NOSE, LEFT_EAR, RIGHT_EAR]].any())
    joints[[UPPER_NECK, HEAD_TOP], 2] = head_seen
    inside = (joints[:, 0] >= 0) & (joints[:, 0] < width) & (joints[:, 1] >= 0) & (joints[:, 1] < height)
    joints[~inside, 2] = 0
    return joints


def head_box(joints: np.ndarray) -> list[float]:
    """The square centred between upper neck and head top whose side is their distance (x1, y1, x2, y2)."""
    neck, top = joints[UPPER_NECK, :2], joints[HEAD_TOP, :2]
    centre = (neck + top) / 2
    half = np.linalg.norm(top - neck) / 2
    return [float(centre[0] - half), float(centre[1] - half), float(centre[0] + half), float(centre[1] + half)]


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two boxes x1, y1, x2, y2."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def person_shaped(box: list[float]) -> bool:
    """Whether a box's width / height is that of a standing person (WEAK_ASPECT)."""
    width, height = box[2] - box[0], box[3] - box[1]
    return height > 0 and WEAK_ASPECT[0] <= width / height <= WEAK_ASPECT[1]


def torso_midpoints(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shoulder and hip midpoints of 33 BlazePose landmarks."""
    shoulders = landmarks[[LEFT_SHOULDER, RIGHT_SHOULDER], :2].mean(axis=0)
    hips = landmarks[[LEFT_HIP, RIGHT_HIP], :2].mean(axis=0)
    return shoulders, hips


def torso_length(landmarks: np.ndarray) -> float:
    """Distance between the shoulder and hip midpoints, in the landmarks' pixels."""
    shoulders, hips = torso_midpoints(landmarks)
    return float(np.linalg.norm(shoulders - hips))


def same_person(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two crops' landmarks (frame pixels) describe one person: shoulder and hip midpoints coincide."""
    (shoulders_a, hips_a), (shoulders_b, hips_b) = torso_midpoints(a), torso_midpoints(b)
    tolerance = DUPLICATE_TORSO_FRACTION * max(torso_length(a), torso_length(b), 1.0)
    return bool(np.linalg.norm(shoulders_a - shoulders_b) < tolerance and np.linalg.norm(hips_a - hips_b) < tolerance)


def label_frame(frame_bgr: np.ndarray, boxes: list[list[float]], pose: BlazePose) -> tuple[np.ndarray, dict]:
    """The label image and the people/rejected-box record of one frame."""
    rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])
    height, width = rgb.shape[:2]
    cropped = [box for box in boxes if box[4] >= CROP_SCORE]
    weak = [box for box in boxes if box[4] < CROP_SCORE and person_shaped(box)
            and all(iou(box, c) <= WEAK_OVERLAP_IOU for c in cropped)]
    candidates, rejected = [], []
    for box in cropped:
        x0, y0, side = square_crop(box)
        landmarks, presence, probability = pose(cut(rgb, x0, y0, side))
        torso = torso_length(landmarks) / CROP_SIZE
        if presence <= PRESENCE_MIN or torso < TORSO_MIN:
            rejected.append({"box": [round(v, 2) for v in box[:4]], "score": box[4], "presence": round(presence, 4),
                             "torso": round(torso, 3)})
            continue
        landmarks[:, :2] = landmarks[:, :2] * (side / CROP_SIZE) + (x0, y0)
        candidates.append({"box": box, "crop": (x0, y0, side), "presence": presence, "torso": torso,
                           "landmarks": landmarks, "probability": probability})
    people: list[dict] = []
    for candidate in sorted(candidates, key=lambda c: -c["presence"]):
        if any(same_person(candidate["landmarks"], kept["landmarks"]) for kept in people):
            continue
        people.append(candidate)

    person_probability = np.zeros((height, width), np.float32)
    for person in candidates:  # duplicates' masks too: they see the same person, the max keeps the surer one
        paste_max(person_probability, person["probability"], *person["crop"])
    label = np.zeros((height, width), np.uint8)
    label[person_probability >= PERSON_P] = 1
    label[(person_probability >= BACKGROUND_P) & (person_probability < PERSON_P)] = IGNORE
    outline = (person_probability >= OUTLINE_P).astype(np.uint8)
    kernel = np.ones((2 * BAND_PX + 1, 2 * BAND_PX + 1), np.uint8)
    band = cv2.dilate(outline, kernel) != cv2.erode(outline, kernel)
    label[band] = IGNORE
    unsure = [r["box"] for r in rejected if r["score"] >= DISAGREE_SCORE or r["torso"] >= TORSO_MIN
              or (r["presence"] > PRESENCE_MIN and r["torso"] >= COLLAPSED_TORSO)]
    for box in unsure + [b[:4] for b in weak]:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        region = label[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)]
        region[region == 0] = IGNORE

    record = {"width": width, "height": height, "people": [], "rejected": rejected,
              "weak": [[round(v, 2) for v in b] for b in weak]}
    for person in people:
        joints = mpii_joints(person["landmarks"], width, height)
        x1, y1, x2, y2, score = person["box"]
        record["people"].append({
            "joints": [[round(float(x), 2), round(float(y), 2), int(v)] for x, y, v in joints],
            "head_box": [round(v, 2) for v in head_box(joints)],
            "box": [round(v, 2) for v in (x1, y1, x2, y2)],
            "score": score,
            "presence": round(person["presence"], 4),
            "torso": round(person["torso"], 3),
            "landmarks": [[round(float(v), 3) for v in row] for row in person["landmarks"]],
        })
    return label, record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path,
                        default=WORK / "teachers/mediapipe-pose/pose_landmark_heavy.tflite")
    parser.add_argument("--stems", nargs="*", help="only these frames (default: all)")
    args = parser.parse_args()
    LABELS.mkdir(parents=True, exist_ok=True)
    todo = stems_to_do(args.stems, LABELS)
    if not todo:
        print("label: every frame has its labels")
        return 0
    pose = BlazePose(args.model)
    start, crops = time.monotonic(), 0
    for n, stem_name in enumerate(todo):
        detections_path = DETECTIONS / f"{stem_name}.json"
        if not detections_path.is_file():
            raise SystemExit(f"{detections_path} is missing: run the detect stage first")
        frame = cv2.imread(str(FRAMES / f"{stem_name}.jpg"))
        if frame is None:
            raise SystemExit(f"cannot read {FRAMES / f'{stem_name}.jpg'}: run the frames stage first")
        boxes = json.loads(detections_path.read_text())["boxes"]
        label, record = label_frame(frame, boxes, pose)
        crops += sum(box[4] >= CROP_SCORE for box in boxes)
        png = LABELS / f"{stem_name}.png"
        ok, data = cv2.imencode(".png", label)
        png.with_suffix(".tmp").write_bytes(data.tobytes())
        png.with_suffix(".tmp").replace(png)
        write_json(LABELS / f"{stem_name}.json", record)  # written last: its presence marks the frame done
        if (n + 1) % 50 == 0 or n + 1 == len(todo):
            elapsed = time.monotonic() - start
            print(f"label: {n + 1}/{len(todo)} frames, {crops} crops, {crops / elapsed:.1f} crops/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

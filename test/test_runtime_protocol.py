"""The staged-model protocol the scheduler is typed against: the model and both test doubles implement it."""
import inspect

import torch

from anytime_perception import create_model
from anytime_perception.runtime import AnytimeScheduler, FakeClock, StagedModel
from anytime_perception.runtime.testing import ScriptedModel
from conftest import dependency_missing

try:
    from anytime_perception.ros.testing import GatedModel
except ImportError as error:
    dependency_missing(error)


def test_model_and_test_doubles_are_staged_models():
    doubles = [create_model("adpc_hrnet_w18s_seg"), ScriptedModel(FakeClock()), GatedModel()]
    for model in doubles:
        assert isinstance(model, StagedModel), type(model).__name__
        assert model.step_names == [s.name for s in model.steps] and model.steps[-1].kind == "exit"
        assert sum(s.kind == "exit" for s in model.steps) == model.num_exits
        state = model.begin(torch.zeros(1, 3, 32, 32))
        assert state.next_step == 0 and state.num_steps == len(model.steps)
    assert not isinstance(object(), StagedModel)
    assert inspect.signature(AnytimeScheduler).parameters["model"].annotation in (StagedModel, "StagedModel")

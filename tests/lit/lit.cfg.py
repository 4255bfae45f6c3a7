# lit configuration for Slope's golden tests: `// RUN: %slopec ... | FileCheck %s`.
import os
import shutil
import lit.formats

config.name = "slope"
config.test_format = lit.formats.ShTest(True)
config.suffixes = [".slope", ".test"]
config.excludes = ["Inputs"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.slope_obj_root, "tests", "lit")
config.substitutions.append(("%slopec", config.slopec))
config.substitutions.append(("%fakecuda", config.fake_cuda_dir))
config.substitutions.append(("%samples", os.path.join(config.slope_src_root, "samples")))
config.environment["PATH"] = os.pathsep.join([config.llvm_tools_dir, os.environ.get("PATH", "")])
# Tools some tests need (scripts/setup.sh installs them); tests say REQUIRES: jq / node.
for tool in ["jq", "node"]:
    if shutil.which(tool):
        config.available_features.add(tool)

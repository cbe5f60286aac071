/* ds4 — a loaded model: the mapped GGUF, its hyperparameters and bound weights. */
#ifndef DS4_MODEL_MODEL_H
#define DS4_MODEL_MODEL_H

#include <stdio.h>

#include "gguf/gguf.h"
#include "model/hparams.h"
#include "model/weights.h"
#include "util/err.h"

typedef struct ds4_model {
    gguf_file *file;
    ds4_hparams hp;
    ds4_weights w;
    /* Weights a backend copied elsewhere (device memory), shared by every
     * session of the model and released with it. */
    void *backend_weights;
    void (*backend_release)(struct ds4_model *m);
} ds4_model;

enum {
    DS4_MODEL_NO_DATA_CHECKS = 1, /* --inspect: never read tensor bytes (header-only files) */
};

/* Open, validate metadata, bind every tensor. Returns NULL with err set. */
ds4_model *ds4_model_open(const char *path, int flags, ds4_err *err);
void ds4_model_close(ds4_model *m);

/* Human summary: layers, dims, schedule, tensor types, parameters, file size. */
void ds4_model_print_summary(const ds4_model *m, FILE *out);

#endif

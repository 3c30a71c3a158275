/* The C ABI from C: status codes and messages for bad input, null pointers that are
   errors and not crashes, and results that obey the physics (unit weights give the
   unweighted call bit for bit, forces of an isolated system sum to zero, weights
   select atoms' energies, per-atom virials sum to the virial).
   Built and run by capi/tests/c_program.rs:  cc capi_test.c -lmlff_capi  */
#include "mlff.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures = 0, checks = 0;

#define CHECK(cond, ...)                                      \
    do {                                                      \
        ++checks;                                             \
        if (!(cond)) {                                        \
            ++failures;                                       \
            fprintf(stderr, "FAILED line %d: ", __LINE__);    \
            fprintf(stderr, __VA_ARGS__);                     \
            fprintf(stderr, " (last error: %s)\n", mlff_last_error()); \
        }                                                     \
    } while (0)

/* Two water molecules 3 Å apart. */
static const int32_t Z[6] = {8, 1, 1, 8, 1, 1};
static const double R[18] = {0.0, 0.0, 0.1,  0.0, 0.76, -0.5, 0.0, -0.76, -0.5,
                             3.0, 0.0, 0.1,  3.0, 0.76, -0.5, 3.0, -0.76, -0.5};

int main(void) {
    CHECK(strlen(mlff_version()) > 0, "empty version");
    CHECK(mlff_atomic_number("Cl") == 17, "Cl is %d", mlff_atomic_number("Cl"));
    CHECK(mlff_atomic_number("Xx") == 0 && mlff_atomic_number(NULL) == 0, "unknown symbols give 0");
    CHECK(mlff_gpu_count() >= 0, "gpu count");

    mlff_model *model = (mlff_model *)1;
    CHECK(mlff_model_load(NULL, "cpu", &model) == MLFF_ERROR_ARGUMENT && model == NULL, "null path");
    CHECK(strstr(mlff_last_error(), "path") != NULL, "message names the path: %s", mlff_last_error());
    CHECK(mlff_model_load("default", "cpu", NULL) == MLFF_ERROR_ARGUMENT, "null output handle");
    CHECK(mlff_model_load("/nonexistent/model.safetensors", "cpu", &model) == MLFF_ERROR_MODEL && model == NULL,
          "missing file");
    CHECK(strstr(mlff_last_error(), "/nonexistent/model.safetensors") != NULL, "message names the file");
    CHECK(mlff_model_load("default", "tpu", &model) == MLFF_ERROR_ARGUMENT, "unknown device");
    CHECK(mlff_model_load("default", "cpu:many", &model) == MLFF_ERROR_ARGUMENT, "bad thread count");
    CHECK(mlff_model_load("default", "cpu,cpu", &model) == MLFF_ERROR_ARGUMENT &&
              strstr(mlff_last_error(), "set of devices") != NULL,
          "a device set: %s", mlff_last_error());
    if (mlff_gpu_count() == 0)
        CHECK(mlff_model_load("default", "gpu:0", &model) == MLFF_ERROR_DEVICE, "no GPU here");

    CHECK(mlff_model_load("default", "cpu:2", &model) == MLFF_OK && model != NULL, "load the default model");
    if (model == NULL) return 1;

    double cutoff = 0.0;
    int32_t blocks = 0;
    CHECK(mlff_model_cutoff(model, &cutoff) == MLFF_OK && cutoff == 5.0, "cutoff %g", cutoff);
    CHECK(mlff_model_num_interactions(model, &blocks) == MLFF_OK && blocks == 2, "blocks %d", blocks);
    CHECK(mlff_model_cutoff(NULL, &cutoff) == MLFF_ERROR_ARGUMENT, "null model");
    CHECK(mlff_model_cutoff(model, NULL) == MLFF_ERROR_ARGUMENT, "null output");
    CHECK(mlff_model_check_element(model, 8) == MLFF_OK, "O is known");
    CHECK(mlff_model_check_element(model, 92) == MLFF_ERROR_INPUT, "U is not");
    CHECK(mlff_model_check_element(model, 11) == MLFF_ERROR_INPUT, "Na is not");
    CHECK(strstr(mlff_last_error(), "H C N O F S Cl") != NULL, "message lists the elements: %s", mlff_last_error());
    CHECK(mlff_model_check_element(model, -3) == MLFF_ERROR_ARGUMENT, "negative Z");

    char small[4], line[128];
    CHECK(mlff_model_device(model, small, sizeof small) == MLFF_ERROR_ARGUMENT, "buffer too small");
    CHECK(mlff_model_device(model, line, sizeof line) == MLFF_OK && strcmp(line, "CPU (2 threads)") == 0,
          "device %s", line);

    double forces[18], forces1[18], atom_e[6], atom_w[54];
    mlff_system sys = {6, Z, R, NULL, NULL, NULL};
    mlff_results res = {0.0, {0}, forces, atom_e, atom_w};
    CHECK(mlff_evaluate(model, NULL, &res) == MLFF_ERROR_ARGUMENT, "null system");
    CHECK(mlff_evaluate(model, &sys, NULL) == MLFF_ERROR_ARGUMENT, "null results");
    CHECK(mlff_evaluate(NULL, &sys, &res) == MLFF_ERROR_ARGUMENT, "null model");
    mlff_system no_numbers = {6, NULL, R, NULL, NULL, NULL};
    CHECK(mlff_evaluate(model, &no_numbers, &res) == MLFF_ERROR_ARGUMENT, "null atomic numbers");
    mlff_system huge = {(size_t)1 << 40, Z, R, NULL, NULL, NULL};
    CHECK(mlff_evaluate(model, &huge, &res) == MLFF_ERROR_ARGUMENT, "too many atoms");
    int32_t negative[6] = {8, 1, -1, 8, 1, 1};
    mlff_system bad_z = {6, negative, R, NULL, NULL, NULL};
    CHECK(mlff_evaluate(model, &bad_z, &res) == MLFF_ERROR_ARGUMENT, "negative Z");
    int32_t uranium[6] = {8, 1, 1, 92, 1, 1};
    mlff_system unknown = {6, uranium, R, NULL, NULL, NULL};
    CHECK(mlff_evaluate(model, &unknown, &res) == MLFF_ERROR_INPUT, "unknown element");
    double nan_r[18];
    memcpy(nan_r, R, sizeof R);
    nan_r[4] = NAN;
    mlff_system nan_sys = {6, Z, nan_r, NULL, NULL, NULL};
    CHECK(mlff_evaluate(model, &nan_sys, &res) == MLFF_ERROR_INPUT, "NaN position");
    int32_t pbc[3] = {1, 1, 1};
    mlff_system no_cell = {6, Z, R, NULL, pbc, NULL};
    CHECK(mlff_evaluate(model, &no_cell, &res) == MLFF_ERROR_INPUT, "periodic without a cell");
    double bad_w[6] = {1, 1, 1, 1, INFINITY, 1};
    mlff_system inf_w = {6, Z, R, NULL, NULL, bad_w};
    CHECK(mlff_evaluate(model, &inf_w, &res) == MLFF_ERROR_INPUT, "infinite weight");

    /* Unit weights = no weights, bit for bit. */
    CHECK(mlff_evaluate(model, &sys, &res) == MLFF_OK, "evaluate");
    double energy = res.energy, virial[9], e_atoms[6];
    memcpy(virial, res.virial, sizeof virial);
    memcpy(e_atoms, atom_e, sizeof e_atoms);
    double ones[6] = {1, 1, 1, 1, 1, 1};
    mlff_system unit = {6, Z, R, NULL, NULL, ones};
    mlff_results res1 = {0.0, {0}, forces1, NULL, NULL};
    CHECK(mlff_evaluate(model, &unit, &res1) == MLFF_OK, "evaluate with unit weights");
    CHECK(res1.energy == energy && memcmp(forces, forces1, sizeof forces) == 0, "unit weights change nothing");

    /* An isolated system: Σ F = 0, W = Σ R ⊗ F, Σ atom virials = W, E = Σ atom energies. */
    double sum_e = 0.0;
    for (int i = 0; i < 6; ++i) sum_e += e_atoms[i];
    CHECK(fabs(sum_e - energy) < 1e-9 * fabs(energy), "E %.9f vs Σ atom E %.9f", energy, sum_e);
    for (int x = 0; x < 3; ++x) {
        double f = 0.0;
        for (int i = 0; i < 6; ++i) f += forces[3 * i + x];
        CHECK(fabs(f) < 1e-4, "Σ F[%d] = %g", x, f);
    }
    for (int k = 0; k < 9; ++k) {
        double rf = 0.0, w = 0.0;
        for (int i = 0; i < 6; ++i) {
            rf += R[3 * i + k / 3] * forces[3 * i + k % 3];
            w += atom_w[9 * i + k];
        }
        CHECK(fabs(rf - virial[k]) < 1e-4, "W[%d] %g vs Σ R⊗F %g", k, virial[k], rf);
        CHECK(fabs(w - virial[k]) < 1e-9 * (1.0 + fabs(virial[k])), "Σ atom W[%d] %g vs W %g", k, w, virial[k]);
    }

    /* Weights 1 on the first molecule, 0 on the second: its atoms' energies only. */
    double half[6] = {1, 1, 1, 0, 0, 0};
    mlff_system first = {6, Z, R, NULL, NULL, half};
    CHECK(mlff_evaluate(model, &first, &res) == MLFF_OK, "weighted evaluate");
    double expected = e_atoms[0] + e_atoms[1] + e_atoms[2];
    CHECK(fabs(res.energy - expected) < 1e-9 * fabs(expected), "E %.9f vs %.9f", res.energy, expected);
    CHECK(atom_e[3] == 0.0 && atom_e[4] == 0.0 && atom_e[5] == 0.0, "ghost energies are 0");
    double f_second = 0.0;
    for (int k = 9; k < 18; ++k) f_second += fabs(forces[k]);
    CHECK(f_second > 1e-6, "the first molecule's energy depends on the second (3 Å < rc)");

    /* A periodic cell. */
    double cell[9] = {6.0, 0, 0, 0, 6.0, 0, 1.0, 0, 6.0};
    mlff_system crystal = {6, Z, R, cell, pbc, NULL};
    CHECK(mlff_evaluate(model, &crystal, &res) == MLFF_OK, "periodic evaluate");
    CHECK(isfinite(res.energy) && res.energy != energy, "periodic images change the energy");

    mlff_model_free(model);
    mlff_model_free(NULL);
    printf("capi_test: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}

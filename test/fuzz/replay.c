/* Runs the fuzz target (gwb_fuzz.c) once over each file given, or over
 * every file in each directory given, without libFuzzer: any C compiler
 * builds it, so the target compiles and its seed corpus passes its
 * invariants wherever the unit tests run (make -f Makefile.apxs unit).
 * A violated invariant aborts, naming the input.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data = NULL;
    size_t size = 0, cap = 0, got;

    if (!f) {
        perror(path);
        return 0;
    }
    do {
        if (size == cap) {
            uint8_t *grown = realloc(data, cap = cap ? 2 * cap : 4096);

            if (!grown) {
                fprintf(stderr, "%s: out of memory\n", path);
                free(data);
                fclose(f);
                return 0;
            }
            data = grown;
        }
        got = fread(data + size, 1, cap - size, f);
        size += got;
    } while (got);
    fclose(f);
    fprintf(stderr, "replay: %s\n", path);   /* names the input on abort */
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    return 1;
}

static int replay_dir(const char *path, int *count)
{
    DIR *dir = opendir(path);
    struct dirent *e;
    int ok = 1;

    if (!dir) {
        perror(path);
        return 0;
    }
    while (ok && (e = readdir(dir))) {
        char file[4096];

        if (e->d_name[0] == '.') {
            continue;
        }
        snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
        ok = replay_file(file);
        *count += ok;
    }
    closedir(dir);
    return ok;
}

int main(int argc, char **argv)
{
    int count = 0, i;

    for (i = 1; i < argc; i++) {
        struct stat st;

        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        if (S_ISDIR(st.st_mode) ? !replay_dir(argv[i], &count)
                                : !(count += replay_file(argv[i]))) {
            return 1;
        }
    }
    if (!count) {
        fprintf(stderr, "replay: no input given\n");
        return 1;
    }
    printf("fuzz replay: %d inputs, no invariant violated\n", count);
    return 0;
}

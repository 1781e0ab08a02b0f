/* Stand-in for lib/ollama/vulkan/libggml-vulkan.so.
 *
 * Real ggml-vulkan asks the Vulkan loader for physical devices; the loader finds drivers through
 * ICD manifests (VK_DRIVER_FILES / VK_ICD_FILENAMES, else /usr/share/vulkan/icd.d and
 * /etc/vulkan/icd.d). The stand-in reports one GPU per manifest it finds there, so a scenario
 * has a Vulkan device exactly when it installs an ICD file. VGPU_LAB_ROOT roots the default
 * dirs in the lab's scratch tree, as it does for era A's globs. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-lab.h"

#define MAX_DEVICES 4
#define DEVICE_MIB 16384ULL

static int device_count = -1;

static int is_manifest(const char *name) {
    size_t len = strlen(name);
    return len > 5 && strcmp(name + len - 5, ".json") == 0;
}

static int count_listed(const char *list) {
    int n = 0;
    for (const char *p = list; *p && n < MAX_DEVICES; p++)
        if (p == list || p[-1] == ':') n += *p != ':';
    return n;
}

static int count_in_dir(const char *dir) {
    int n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d)) && n < MAX_DEVICES;) n += is_manifest(e->d_name);
    if (d) closedir(d);
    return n;
}

static void vulkan_init(void) {
    const char *listed = getenv("VK_DRIVER_FILES");
    if (!listed || !*listed) listed = getenv("VK_ICD_FILENAMES");
    if (listed && *listed) {
        device_count = count_listed(listed);
    } else {
        static const char *const dirs[] = {"/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"};
        const char *root = getenv("VGPU_LAB_ROOT");
        char dir[4096];
        device_count = 0;
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
            snprintf(dir, sizeof(dir), "%s%s", root ? root : "", dirs[i]);
            device_count += count_in_dir(dir);
        }
        if (device_count > MAX_DEVICES) device_count = MAX_DEVICES;
    }
    GGML_LOG_INFO("ggml_vulkan: Found %d Vulkan devices:\n", device_count);
    for (int i = 0; i < device_count; i++)
        GGML_LOG_INFO("ggml_vulkan: %d = NVIDIA vGPU (Vulkan) | uma: 0 | fp16: 1 | warp size: 32\n", i);
}

static int vulkan_device_count(void) { return device_count; }

static int vulkan_device_get(int index, struct ggml_lab_device *out) {
    if (index < 0 || index >= device_count) return -1;
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%d", index);
    snprintf(out->name, sizeof(out->name), "NVIDIA vGPU (Vulkan)");
    strcpy(out->library, "Vulkan");
    out->total = out->free = DEVICE_MIB << 20;
    return 0;
}

static struct ggml_backend_reg vulkan_reg = {"Vulkan", vulkan_device_count, vulkan_device_get,
                                             "Vulkan : COOPMAT = 0 |"};

struct ggml_backend_reg *ggml_backend_init(void) {
    if (device_count < 0) vulkan_init();
    return &vulkan_reg;
}

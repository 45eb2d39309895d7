/* A stand-in for libedgetpu's C API (edgetpu_c.h). EFFV2_STUB_EDGETPU_DEVICES=N lists N (0..2)
 * devices; EFFV2_STUB_EDGETPU_BUSY=1 makes delegate creation fail, as when another process holds
 * the device. */
#include <stdlib.h>
#include <string.h>

enum edgetpu_device_type { EDGETPU_APEX_PCI = 0, EDGETPU_APEX_USB = 1 };
struct edgetpu_device { enum edgetpu_device_type type; const char *path; };
struct edgetpu_option { const char *name; const char *value; };

static const struct edgetpu_device DEVICES[2] = {{EDGETPU_APEX_USB, "/sys/bus/usb/devices/stub-1"}, {EDGETPU_APEX_PCI, "/dev/apex_stub"}};

const char *edgetpu_version(void) { return "stub-edgetpu 1 (effv2 test)"; }

struct edgetpu_device *edgetpu_list_devices(size_t *num_devices) {
  const char *v = getenv("EFFV2_STUB_EDGETPU_DEVICES");
  int n = v ? atoi(v) : 0;
  if (n > 2) n = 2;
  *num_devices = 0;
  if (n <= 0) return NULL;
  struct edgetpu_device *list = malloc((size_t)n * sizeof *list);
  if (!list) return NULL;
  memcpy(list, DEVICES, (size_t)n * sizeof *list);
  *num_devices = (size_t)n;
  return list;
}

void edgetpu_free_devices(struct edgetpu_device *d) { free(d); }

void *edgetpu_create_delegate(enum edgetpu_device_type type, const char *name, const struct edgetpu_option *o, size_t n) {
  (void)type; (void)name; (void)o; (void)n;
  const char *busy = getenv("EFFV2_STUB_EDGETPU_BUSY");
  if (busy && strcmp(busy, "1") == 0) return NULL;
  return malloc(16);
}

void edgetpu_free_delegate(void *d) { free(d); }

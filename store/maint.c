/* SPDX-License-Identifier: Apache-2.0 */
/* What the maintenance policies share: a layer's decoded index, an image's layer set. */
#include "maint_i.h"

#include <errno.h>
#include <stdlib.h>

#include <jansson.h>

#include "index/layer.h"
#include "util/log.h"

int store_layer_load_index(struct store *s, const char *digest, struct index_layer **out)
{
	void *enc = NULL;
	size_t len = 0;
	int rc = store_layer_get(s, digest, NULL, &enc, &len);

	*out = NULL;
	if (rc == 0)
		rc = index_layer_decode(enc, len, out);
	free(enc);
	if (rc == -EINVAL || rc == -EPROTO)
		rc = strata_err(EBADMSG, "layer %s does not decode", digest);
	return rc;
}

int store_image_layer_set(json_t *image, json_t *set)
{
	json_t *layer;
	size_t i;

	json_array_foreach (json_object_get(image, "layers"), i, layer) {
		const char *d = json_string_value(json_object_get(layer, "digest"));

		if (d && json_object_set_new(set, d, json_true()) < 0)
			return -ENOMEM;
	}
	return 0;
}

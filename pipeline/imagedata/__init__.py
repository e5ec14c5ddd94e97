"""Images and the split: finding and converting images, the split manifest, the assignment
of files to splits, the validation gate's checks, and the tf.data input pipelines."""

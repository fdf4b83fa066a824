"""The workshop's prediction service, the baseline of benchmarks/serve.py.

One request, one forward pass: PIL decodes the upload, torchvision's transforms resize,
crop and normalise it, and torchvision's MobileNetV2 runs under no_grad inside the request
handler. ImageNet weights from $NAIVE_WEIGHTS (a torchvision state dict).

Usage: NAIVE_WEIGHTS=mobilenet_v2.pth uvicorn --app-dir benchmarks naive_service:app
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch
import torchvision
from fastapi import FastAPI, File, UploadFile
from PIL import Image
from torchvision import transforms

CLASSES = (Path(__file__).resolve().parents[1] / "python/tlcore/imagenet_classes.txt").read_text().splitlines()

model = torchvision.models.mobilenet_v2()
model.load_state_dict(torch.load(os.environ["NAIVE_WEIGHTS"], map_location="cpu", weights_only=True))
model.eval()
preprocess = transforms.Compose([
    transforms.Resize(256),
    transforms.CenterCrop(224),
    transforms.ToTensor(),
    transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
])

app = FastAPI()


@app.post("/predict/")
async def predict(file: UploadFile = File(...)):
    image = Image.open(io.BytesIO(await file.read())).convert("RGB")
    x = preprocess(image).unsqueeze(0)
    with torch.no_grad():
        probabilities = torch.softmax(model(x), dim=1)[0]
    values, indices = probabilities.topk(5)
    top_k = [{"label": CLASSES[i], "probability": float(v)} for v, i in zip(values, indices)]
    return {"prediction": top_k[0]["label"], "confidence": top_k[0]["probability"], "top_k": top_k,
            "model": "mobilenet_v2"}
